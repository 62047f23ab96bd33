# Shared by the scripts: install what the build needs, from Debian's packages.
# shellcheck shell=bash

# ensure_packages PKG... : apt-get install the missing ones (root, or sudo when available).
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The packages libcurl's system-library target builds against.
BUILD_PACKAGES=(libcurl4-openssl-dev libssl-dev libsqlite3-dev pkg-config)

# release_build [swift build flags...]: the release build every script runs and measures. The
# Swift runtime and Foundation are linked statically: 5-7 MiB less resident (idle and at peak),
# no `__tls_get_addr` or PLT stubs on the request path, and 5-17% less CPU per request in
# side-by-side rounds (docs/benchmarks.md). One set of flags for every product, so that
# building one does not rebuild the others.
release_build() { swift build -c release --static-swift-stdlib "$@"; }

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_ready URL: until it answers 2xx (10 s at most; fails after that).
wait_ready() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

cpu_ticks() { # pid... : user + system CPU of the processes (all threads), in clock ticks
  local total=0 pid
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
  echo "$total"
}
