#ifndef SPOTIFY_PROXY_CSQLITE_SHIM_H
#define SPOTIFY_PROXY_CSQLITE_SHIM_H

#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro Swift does not import: bind text that SQLite copies. */
static inline int csqlite_bind_text(sqlite3_stmt *statement, int index, const char *text, int length) {
    return sqlite3_bind_text(statement, index, text, length, SQLITE_TRANSIENT);
}

#endif
