# A throwaway PostgreSQL cluster on loopback, for tests and benchmarks. Needs scripts/lib.sh.
# shellcheck shell=bash

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# as_postgres CMD...: PostgreSQL refuses to run as root; run as the postgres user when root.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_throwaway_postgres() {
  local bin
  bin=$(pg_bin)
  [ -n "$bin" ] || { echo "PostgreSQL binaries not found (apt-get install postgresql)" >&2; return 1; }
  THROWAWAY_PG_DIR=$(mktemp -d /tmp/spotify-proxy-pg.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres "$THROWAWAY_PG_DIR"
  THROWAWAY_PG_PORT=$(free_port)
  as_postgres "$bin/initdb" -D "$THROWAWAY_PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
  as_postgres "$bin/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -l "$THROWAWAY_PG_DIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $THROWAWAY_PG_PORT -k $THROWAWAY_PG_DIR -c fsync=off -c max_connections=200" start >/dev/null
  THROWAWAY_DATABASE_URL="postgres://postgres@127.0.0.1:$THROWAWAY_PG_PORT/postgres?sslmode=disable"
  echo "throwaway PostgreSQL at $THROWAWAY_DATABASE_URL" >&2
}

stop_throwaway_postgres() {
  [ -n "${THROWAWAY_PG_DIR:-}" ] || return 0
  as_postgres "$(pg_bin)/pg_ctl" -D "$THROWAWAY_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$THROWAWAY_PG_DIR"
}
