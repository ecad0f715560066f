/* The SQLite backend: the embedded default. One connection, used by one thread at a time.
 *
 * Durability: WAL with synchronous=NORMAL. A commit appends to the WAL with write(2) before it
 * returns, so a killed process loses nothing it committed; only a power cut or kernel crash may
 * lose the last transactions (never corrupting the file). That is the trade SQLite documents as
 * safe for WAL, and it keeps commits off fsync. */
#include "store-int.h"

#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SQLITE_BUSY_TIMEOUT_MS 5000

enum { TX_BEGIN, TX_COMMIT, TX_ROLLBACK, TX_COUNT };

static const char *const tx_sql[TX_COUNT] = {
    /* IMMEDIATE takes the write lock now rather than at the first write, so two writers queue
     * on busy_timeout instead of one failing with SQLITE_BUSY half-way through its work. */
    [TX_BEGIN] = "BEGIN IMMEDIATE",
    [TX_COMMIT] = "COMMIT",
    [TX_ROLLBACK] = "ROLLBACK",
};

struct sqlite_conn {
    sqlite3 *db;
    /* Prepared once per connection, on first use, and reset after each use. */
    sqlite3_stmt *stmts[STMT_COUNT];
    sqlite3_stmt *tx[TX_COUNT];
};

struct store_row {
    sqlite3_stmt *stmt;
};

/* Maps a failed call to a store code. Unique violations are the caller's business (a name
 * taken), so only other failures are logged; SQLite's messages name tables and columns,
 * never bound values, so no secret reaches the log. */
static int
sqlite_error(sqlite3 *db, const char *what)
{
    int ext = sqlite3_extended_errcode(db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        return STORE_ECONFLICT;
    log_error("store: sqlite %s: %s (%d)", what, sqlite3_errmsg(db), ext);
    return STORE_EIO;
}

static int
sqlite_prepare(struct sqlite_conn *c, sqlite3_stmt **slot, const char *sql, const char *what)
{
    if (*slot != NULL)
        return 0;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        *slot = NULL;
        return sqlite_error(c->db, what);
    }
    return 0;
}

static int
sqlite_bind(sqlite3_stmt *st, const struct store_arg *args, size_t nargs, const char *what)
{
    /* The SQL names parameters $1..$n (PostgreSQL's spelling); SQLite numbers named parameters
     * by first appearance, so look each index up rather than assume the order. */
    if ((size_t)sqlite3_bind_parameter_count(st) != nargs) {
        log_error("store: sqlite %s: %d parameters in the SQL, %zu given", what,
                  sqlite3_bind_parameter_count(st), nargs);
        return STORE_EIO;
    }
    for (size_t i = 0; i < nargs; i++) {
        char name[24];
        snprintf(name, sizeof(name), "$%zu", i + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        int rc;
        if (idx == 0) {
            log_error("store: sqlite %s: parameter %s is not in the SQL", what, name);
            return STORE_EIO;
        }
        switch (args[i].type) {
        case STORE_ARG_TEXT:
            rc = sqlite3_bind_text(st, idx, args[i].text ? args[i].text : "", -1, SQLITE_TRANSIENT);
            break;
        case STORE_ARG_INT:
        case STORE_ARG_BOOL:
            rc = sqlite3_bind_int64(st, idx, args[i].i);
            break;
        default:
            rc = sqlite3_bind_null(st, idx);
            break;
        }
        if (rc != SQLITE_OK)
            return sqlite_error(sqlite3_db_handle(st), what);
    }
    return 0;
}

static int
sqlite_query(struct store *s, const struct store_query *q, const struct store_arg *args,
             size_t nargs, store_row_fn fn, void *arg, int64_t *changes)
{
    struct sqlite_conn *c = s->impl;
    int ret = sqlite_prepare(c, &c->stmts[q->id], q->sql, q->name);
    if (ret < 0)
        return ret;
    sqlite3_stmt *st = c->stmts[q->id];
    /* Some failures (disk full, I/O) make SQLite roll the whole transaction back; running on
     * would commit the rest of the caller's unit of work piecemeal in autocommit mode. */
    if (s->in_tx && sqlite3_get_autocommit(c->db)) {
        log_error("store: sqlite %s: the transaction was already rolled back", q->name);
        return STORE_EIO;
    }
    ret = sqlite_bind(st, args, nargs, q->name);
    if (ret < 0)
        goto out;
    struct store_row row = {st};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (fn != NULL && (ret = fn(&row, arg)) < 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = sqlite_error(c->db, q->name);
        goto out;
    }
    if (changes != NULL)
        *changes = sqlite3_changes64(c->db);
out:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

static int
sqlite_exec(struct store *s, const char *sql)
{
    struct sqlite_conn *c = s->impl;
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = sqlite_error(c->db, "exec");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int
sqlite_tx(struct sqlite_conn *c, int which)
{
    int rc = sqlite_prepare(c, &c->tx[which], tx_sql[which], tx_sql[which]);
    if (rc < 0)
        return rc;
    if (sqlite3_step(c->tx[which]) != SQLITE_DONE)
        rc = sqlite_error(c->db, tx_sql[which]);
    sqlite3_reset(c->tx[which]);
    return rc;
}

static int
sqlite_begin(struct store *s)
{
    return sqlite_tx(s->impl, TX_BEGIN);
}

static int
sqlite_commit(struct store *s)
{
    return sqlite_tx(s->impl, TX_COMMIT);
}

static void
sqlite_rollback(struct store *s)
{
    struct sqlite_conn *c = s->impl;
    if (!sqlite3_get_autocommit(c->db)) /* SQLite may have rolled back already */
        sqlite_tx(c, TX_ROLLBACK);
}

static void
sqlite_close(struct store *s)
{
    struct sqlite_conn *c = s->impl;
    if (c == NULL)
        return;
    for (size_t i = 0; i < ARRAY_LEN(c->stmts); i++)
        sqlite3_finalize(c->stmts[i]);
    for (size_t i = 0; i < ARRAY_LEN(c->tx); i++)
        sqlite3_finalize(c->tx[i]);
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_error("store: sqlite close: %s", sqlite3_errmsg(c->db));
    free(c);
    s->impl = NULL;
}

static const char *
sqlite_col_text(const struct store_row *row, int col)
{
    const unsigned char *t = sqlite3_column_text(row->stmt, col);
    return t ? (const char *)t : "";
}

static int64_t
sqlite_col_int(const struct store_row *row, int col)
{
    return sqlite3_column_int64(row->stmt, col);
}

static bool
sqlite_col_bool(const struct store_row *row, int col)
{
    return sqlite3_column_int64(row->stmt, col) != 0;
}

static const struct store_backend sqlite_backend = {
    .name = "sqlite",
    .exec = sqlite_exec,
    .query = sqlite_query,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .close = sqlite_close,
    .col_text = sqlite_col_text,
    .col_int = sqlite_col_int,
    .col_bool = sqlite_col_bool,
};

/* Reads a one-value PRAGMA into out (cap bytes). */
static int
pragma_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", t ? (const char *)t : "");
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Sets the connection's pragmas and checks that the ones that matter took effect. */
static char *
sqlite_configure(sqlite3 *db, bool in_memory)
{
    char mode[32] = "", fk[8] = "";
    sqlite3_extended_result_codes(db, 1);
    /* First, so that switching to WAL waits for a lock another process holds. */
    sqlite3_busy_timeout(db, SQLITE_BUSY_TIMEOUT_MS);
    if (pragma_text(db, "PRAGMA journal_mode=WAL", mode, sizeof(mode)) < 0)
        return xasprintf("cannot set WAL mode: %s", sqlite3_errmsg(db));
    if (strcmp(mode, "wal") != 0 && !(in_memory && strcmp(mode, "memory") == 0))
        return xasprintf("cannot set WAL mode (journal mode is %s)", mode);
    if (sqlite3_exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", NULL, NULL, NULL) !=
        SQLITE_OK)
        return xasprintf("cannot set pragmas: %s", sqlite3_errmsg(db));
    if (pragma_text(db, "PRAGMA foreign_keys", fk, sizeof(fk)) < 0 || strcmp(fk, "1") != 0)
        return xstrdup("this SQLite does not enforce foreign keys");
    return NULL;
}

struct store *
store_open_sqlite(const char *path, char **err)
{
    char *msg = NULL;
    struct store *s = NULL;
    struct sqlite_conn *c = NULL;
    sqlite3 *db = NULL;
    bool in_memory = path != NULL && strcmp(path, ":memory:") == 0;

    if (path == NULL || path[0] == '\0') {
        msg = xstrdup("no database path given");
        goto fail;
    }
    /* Create the file ourselves, owner-only: it holds password and token hashes. SQLite gives
     * its -wal and -shm files the database file's permissions. The parent directory must exist:
     * making it is the caller's decision. */
    if (!in_memory) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            msg = xasprintf("cannot open database %s: %s", path, strerror(errno));
            goto fail;
        }
        close(fd);
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        msg = xasprintf("cannot open database %s: %s", path,
                        db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    char *cfg = sqlite_configure(db, in_memory);
    if (cfg != NULL) {
        msg = xasprintf("database %s: %s", path, cfg);
        free(cfg);
        goto fail;
    }
    c = xcalloc(1, sizeof(*c));
    c->db = db;
    db = NULL;
    s = xcalloc(1, sizeof(*s));
    s->be = &sqlite_backend;
    s->impl = c;
    if (store_migrate(s, &msg) < 0)
        goto fail;
    return s;
fail:
    store_close(s); /* also closes c's connection */
    sqlite3_close(db);
    if (err != NULL)
        *err = msg;
    else
        free(msg);
    return NULL;
}
