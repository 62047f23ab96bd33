import SpotifyCatalog
/// Versioned schema migrations, applied in order at start and by `spotify-proxy migrate`.
/// A version, once released, never changes: new columns come as new versions.
enum Schema {
    struct Migration {
        var version: Int
        var statements: [String]
    }

    static let postgres: [Migration] = [
        Migration(version: 1, statements: [
            """
            CREATE TABLE IF NOT EXISTS artists (
              id text PRIMARY KEY, name text NOT NULL, popularity integer, followers integer, genres text[],
              raw jsonb NOT NULL, first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now())
            """,
            """
            CREATE TABLE IF NOT EXISTS albums (
              id text PRIMARY KEY, name text NOT NULL, album_type text, release_date text, total_tracks integer, label text,
              raw jsonb NOT NULL, first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now())
            """,
            """
            CREATE TABLE IF NOT EXISTS tracks (
              id text PRIMARY KEY, name text NOT NULL, album_id text, duration_ms integer, explicit boolean, popularity integer,
              track_number integer, disc_number integer, isrc text,
              raw jsonb NOT NULL, first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE TABLE IF NOT EXISTS album_artists (album_id text NOT NULL, artist_id text NOT NULL, position integer NOT NULL, PRIMARY KEY (album_id, artist_id))",
            "CREATE TABLE IF NOT EXISTS track_artists (track_id text NOT NULL, artist_id text NOT NULL, position integer NOT NULL, PRIMARY KEY (track_id, artist_id))",
            "CREATE INDEX IF NOT EXISTS artists_lower_name ON artists (lower(name))",
            "CREATE INDEX IF NOT EXISTS albums_lower_name ON albums (lower(name))",
            "CREATE INDEX IF NOT EXISTS tracks_lower_name ON tracks (lower(name))",
            "CREATE INDEX IF NOT EXISTS tracks_album_id ON tracks (album_id)",
            "CREATE INDEX IF NOT EXISTS album_artists_artist_id ON album_artists (artist_id)",
            "CREATE INDEX IF NOT EXISTS track_artists_artist_id ON track_artists (artist_id)",
        ]),
        // `raw` merges at every depth, as `JSONValue.merging` and SQLite's `json_patch` do
        // (version 1 merged the top level only, with `||`): equal values short-cut, objects
        // merge member by member, anything else is replaced; a JSON null never erases.
        Migration(version: 2, statements: [
            """
            CREATE OR REPLACE FUNCTION spotify_proxy_merge(stored jsonb, incoming jsonb) RETURNS jsonb
            LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
            BEGIN
              IF stored IS NULL OR stored = incoming THEN RETURN COALESCE(incoming, stored); END IF;
              IF incoming IS NULL OR jsonb_typeof(incoming) = 'null' THEN RETURN stored; END IF;
              IF jsonb_typeof(stored) <> 'object' OR jsonb_typeof(incoming) <> 'object' THEN RETURN incoming; END IF;
              -- Recursing only where both members are objects and differ keeps this one query per
              -- stored object, not one call per member.
              RETURN (SELECT jsonb_object_agg(key, CASE
                        WHEN s.value IS NULL THEN i.value
                        WHEN i.value IS NULL OR jsonb_typeof(i.value) = 'null' THEN s.value
                        WHEN jsonb_typeof(s.value) = 'object' AND jsonb_typeof(i.value) = 'object' AND s.value <> i.value
                          THEN spotify_proxy_merge(s.value, i.value)
                        ELSE i.value END)
                      FROM jsonb_each(stored) AS s FULL JOIN jsonb_each(incoming) AS i USING (key));
            END
            $$
            """,
            // `raw` is mostly over 2 KB, so stored compressed: lz4 costs a fraction of the default
            // pglz (which was the top function in a profile of the upserts). Servers built
            // without lz4, or older than 14, keep pglz.
            """
            DO $$
            BEGIN
              EXECUTE 'ALTER TABLE artists ALTER COLUMN raw SET COMPRESSION lz4';
              EXECUTE 'ALTER TABLE albums ALTER COLUMN raw SET COMPRESSION lz4';
              EXECUTE 'ALTER TABLE tracks ALTER COLUMN raw SET COMPRESSION lz4';
            EXCEPTION WHEN feature_not_supported OR syntax_error THEN NULL;
            END
            $$
            """,
        ]),
    ]

    static let sqlite: [Migration] = [
        Migration(version: 1, statements: [
            """
            CREATE TABLE IF NOT EXISTS artists (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, popularity INTEGER, followers INTEGER, genres TEXT,
              raw TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS albums (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, album_type TEXT, release_date TEXT, total_tracks INTEGER, label TEXT,
              raw TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS tracks (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, album_id TEXT, duration_ms INTEGER, explicit INTEGER, popularity INTEGER,
              track_number INTEGER, disc_number INTEGER, isrc TEXT,
              raw TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL)
            """,
            "CREATE TABLE IF NOT EXISTS album_artists (album_id TEXT NOT NULL, artist_id TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (album_id, artist_id))",
            "CREATE TABLE IF NOT EXISTS track_artists (track_id TEXT NOT NULL, artist_id TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (track_id, artist_id))",
            "CREATE INDEX IF NOT EXISTS artists_lower_name ON artists (name COLLATE NOCASE)",
            "CREATE INDEX IF NOT EXISTS albums_lower_name ON albums (name COLLATE NOCASE)",
            "CREATE INDEX IF NOT EXISTS tracks_lower_name ON tracks (name COLLATE NOCASE)",
            "CREATE INDEX IF NOT EXISTS tracks_album_id ON tracks (album_id)",
            "CREATE INDEX IF NOT EXISTS album_artists_artist_id ON album_artists (artist_id)",
            "CREATE INDEX IF NOT EXISTS track_artists_artist_id ON track_artists (artist_id)",
        ])
    ]
}
