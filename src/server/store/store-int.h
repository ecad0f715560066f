/* The store's insides: what a backend (SQLite now, PostgreSQL later) must provide, and the
 * shared pieces the backends and the generic layer use. Not for use outside src/server/store/.
 *
 * The split: store.c owns every SQL text and turns rows into records; a backend only knows how
 * to run a numbered, parameterised statement and hand back typed columns. So the SQL is written
 * once, and must stay portable: `$1`, `$2`... placeholders (PostgreSQL's own, and a valid named
 * parameter in SQLite), TEXT/BIGINT/BOOLEAN columns, `ON CONFLICT (...) DO UPDATE`, `RETURNING`,
 * partial indexes, lower(). A PostgreSQL backend binds text-format parameters with the types
 * given here and prepares each statement once per connection, as the SQLite one does. */
#ifndef STORE_STORE_INT_H
#define STORE_STORE_INT_H

#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every statement the generic layer runs, so a backend can cache one prepared handle each. */
enum store_stmt {
    STMT_MIGRATION_VERSION,
    STMT_MIGRATION_RECORD,
    STMT_CONFIG_GET,
    STMT_CONFIG_SET,
    STMT_USER_INSERT,
    STMT_USER_COUNT,
    STMT_USER_BY_ID,
    STMT_USER_BY_EMAIL,
    STMT_USER_BY_USERNAME,
    STMT_USER_TOUCH,
    STMT_APIKEY_INSERT,
    STMT_APIKEY_BY_ID,
    STMT_APIKEY_UPDATE_USAGE,
    STMT_APIKEY_DELETE,
    STMT_PROXY_INSERT,
    STMT_PROXY_BY_ID,
    STMT_PROXY_BY_NAME,
    STMT_PROXY_LIST,
    STMT_PROXY_LIST_ALL,
    STMT_PROXY_UPDATE,
    STMT_PROXY_UPDATE_HASH,
    STMT_PROXY_REGISTER,
    STMT_PROXY_DELETE,
    STMT_REPLICA_UPSERT,
    STMT_REPLICA_BY_ID,
    STMT_REPLICA_LIST,
    STMT_REPLICA_STOP,
    STMT_WORKSPACE_INSERT,
    STMT_WORKSPACE_BY_ID,
    STMT_WORKSPACE_BY_OWNER_NAME,
    STMT_WORKSPACE_LIST,
    STMT_WORKSPACE_COUNT,
    STMT_WORKSPACE_DELETE,
    STMT_WORKSPACE_TOUCH,
    STMT_AGENT_INSERT,
    STMT_AGENT_BY_ID,
    STMT_AGENT_BY_TOKEN,
    STMT_AGENT_LIST,
    STMT_AGENT_CONNECTION,
    STMT_AGENT_DISCONNECT_ALL,
    STMT_APP_INSERT,
    STMT_APP_LIST,
    STMT_CRYPTO_KEY_INSERT,
    STMT_CRYPTO_KEY_RETIRE,
    STMT_CRYPTO_KEY_LIST,
    STMT_APP_STAT_UPSERT,
    STMT_COUNT
};

struct store_query {
    enum store_stmt id;
    const char *name; /* for log lines; never a parameter value */
    const char *sql;
};

/* A statement parameter. Booleans are their own type because the two databases spell them
 * differently on the wire (SQLite 0/1, PostgreSQL true/false). */
enum store_arg_type { STORE_ARG_NULL, STORE_ARG_TEXT, STORE_ARG_INT, STORE_ARG_BOOL };

struct store_arg {
    enum store_arg_type type;
    const char *text; /* STORE_ARG_TEXT; NULL is bound as "" */
    int64_t i;        /* STORE_ARG_INT, STORE_ARG_BOOL */
};

#define ARG_TEXT(s) ((struct store_arg){.type = STORE_ARG_TEXT, .text = (s)})
#define ARG_INT(v) ((struct store_arg){.type = STORE_ARG_INT, .i = (v)})
#define ARG_BOOL(v) ((struct store_arg){.type = STORE_ARG_BOOL, .i = (v) ? 1 : 0})

/* One result row, defined by the backend; read it only through the backend's col_* functions,
 * and only during the row callback. */
struct store_row;

/* Called once per result row; returning < 0 stops the query, which then returns that value. */
typedef int (*store_row_fn)(const struct store_row *row, void *arg);

struct store_backend {
    const char *name;
    /* Runs a script of one or more statements without parameters or results (migrations).
     * Returns 0 or a STORE_E* code (logged). */
    int (*exec)(struct store *s, const char *sql);
    /* Runs q with args (args[i] is $i+1), calling fn for each row (fn may be NULL). Sets
     * *changes (when not NULL) to the rows inserted, updated or deleted. Returns 0,
     * STORE_ECONFLICT on a unique violation, or STORE_EIO (logged with q->name). */
    int (*query)(struct store *s, const struct store_query *q, const struct store_arg *args,
                 size_t nargs, store_row_fn fn, void *arg, int64_t *changes);
    /* Explicit transactions. begin takes the write lock at once, so writers serialise.
     * rollback is a no-op when the database has already ended the transaction. */
    int (*begin)(struct store *s);
    int (*commit)(struct store *s);
    void (*rollback)(struct store *s);
    /* Frees the backend state and the connection (not s). */
    void (*close)(struct store *s);
    /* Column readers: NULL reads as "" / 0 / false. The text lives until the next row. */
    const char *(*col_text)(const struct store_row *row, int col);
    int64_t (*col_int)(const struct store_row *row, int col);
    bool (*col_bool)(const struct store_row *row, int col);
};

struct store {
    const struct store_backend *be;
    void *impl; /* the backend's connection state */
    bool in_tx; /* inside store_begin .. store_commit/rollback */
};

/* Creates the schema or brings it up to date, in one transaction. Returns 0, or < 0 with
 * *err set (caller frees). */
int store_migrate(struct store *s, char **err);
/* The newest schema version this binary knows. */
int64_t store_schema_latest(void);

/* The query table lives in store.c; migrations.c uses its two entries. */
const struct store_query *store_query_get(enum store_stmt id);

#endif
