/* The store's backend-independent half: the SQL of every operation, the mapping between rows
 * and records, transactions, and the record helpers. A backend (sqlite.c) only runs statements;
 * see store-int.h for the split. */
#include "store-int.h"

#include "base/buf.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/util.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_COLS                                                                                  \
    "id, email, username, name, hashed_password, status, login_type, rbac_roles, created_at, "     \
    "updated_at, last_seen_at"
#define APIKEY_COLS                                                                                \
    "id, user_id, hashed_secret, lifetime_seconds, expires_at, created_at, updated_at, "           \
    "last_used, login_type, scope, token_name, ip_address"
#define PROXY_COLS                                                                                 \
    "id, name, display_name, icon, url, wildcard_hostname, created_at, updated_at, deleted, "      \
    "token_hashed_secret, region_id, derp_enabled, derp_only, version"
#define REPLICA_COLS                                                                               \
    "id, proxy_id, hostname, version, relay_address, error, region_id, created_at, updated_at, "   \
    "stopped_at"

#define WORKSPACE_COLS "id, owner_id, name, created_at, updated_at, last_used_at, deleted"
#define AGENT_COLS                                                                                 \
    "id, workspace_id, name, auth_token_hash, created_at, updated_at, first_connected_at, "        \
    "last_connected_at, disconnected_at, version, lifecycle_state"
#define APP_COLS "id, agent_id, slug, display_name, url, subdomain, sharing_level, created_at"

/* Live workspaces, optionally of one owner ($1) and with names LIKE $2 (escaped with '\'). */
#define WORKSPACE_FILTER                                                                           \
    "FROM workspaces w JOIN users u ON u.id = w.owner_id WHERE w.deleted = false "                 \
    "AND ($1 = '' OR w.owner_id = $1) AND ($2 = '' OR lower(w.name) LIKE $2 ESCAPE '\\')"

#define Q(id_, name_, sql_) [id_] = {id_, name_, sql_}

static const struct store_query queries[STMT_COUNT] = {
    Q(STMT_MIGRATION_VERSION, "migration_version",
      "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"),
    Q(STMT_MIGRATION_RECORD, "migration_record",
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)"),
    Q(STMT_CONFIG_GET, "config_get", "SELECT value FROM site_configs WHERE key = $1"),
    Q(STMT_CONFIG_SET, "config_set",
      "INSERT INTO site_configs (key, value) VALUES ($1, $2) "
      "ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
    /* Users are never deleted yet; the deleted = false filters keep a future soft delete from
     * leaving a deleted user able to sign in or to hold a name. */
    Q(STMT_USER_INSERT, "user_insert",
      "INSERT INTO users (" USER_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
    Q(STMT_USER_COUNT, "user_count", "SELECT COUNT(*) FROM users WHERE deleted = false"),
    Q(STMT_USER_BY_ID, "user_by_id",
      "SELECT " USER_COLS " FROM users WHERE id = $1 AND deleted = false"),
    Q(STMT_USER_BY_EMAIL, "user_by_email",
      "SELECT " USER_COLS " FROM users WHERE lower(email) = lower($1) AND deleted = false"),
    Q(STMT_USER_BY_USERNAME, "user_by_username",
      "SELECT " USER_COLS " FROM users WHERE lower(username) = lower($1) AND deleted = false"),
    Q(STMT_USER_TOUCH, "user_touch",
      "UPDATE users SET last_seen_at = $2, updated_at = $2 WHERE id = $1 AND deleted = false"),
    Q(STMT_APIKEY_INSERT, "apikey_insert",
      "INSERT INTO api_keys (" APIKEY_COLS ") "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
    Q(STMT_APIKEY_BY_ID, "apikey_by_id", "SELECT " APIKEY_COLS " FROM api_keys WHERE id = $1"),
    Q(STMT_APIKEY_UPDATE_USAGE, "apikey_update_usage",
      "UPDATE api_keys SET last_used = $2, expires_at = $3 WHERE id = $1"),
    Q(STMT_APIKEY_DELETE, "apikey_delete", "DELETE FROM api_keys WHERE id = $1"),
    /* region_id is computed in the inserting statement itself, so it is atomic with the insert
     * (SQLite holds the write lock for the whole statement). Deleted proxies count, so a
     * region id is never handed out twice. On PostgreSQL two primaries inserting at once could
     * read the same MAX; the UNIQUE on region_id turns that into a conflict, so a PostgreSQL
     * backend should lock the table (or retry) around this statement. */
    Q(STMT_PROXY_INSERT, "proxy_insert",
      "INSERT INTO workspace_proxies (" PROXY_COLS ") "
      "SELECT $1, $2, $3, $4, $5, $6, $7, $8, false, $9, COALESCE(MAX(region_id), 10000) + 1, "
      "$10, $11, $12 FROM workspace_proxies RETURNING region_id"),
    Q(STMT_PROXY_BY_ID, "proxy_by_id",
      "SELECT " PROXY_COLS " FROM workspace_proxies WHERE id = $1"),
    Q(STMT_PROXY_BY_NAME, "proxy_by_name",
      "SELECT " PROXY_COLS " FROM workspace_proxies "
      "WHERE lower(name) = lower($1) AND deleted = false"),
    Q(STMT_PROXY_LIST, "proxy_list",
      "SELECT " PROXY_COLS " FROM workspace_proxies WHERE deleted = false "
      "ORDER BY created_at, name"),
    Q(STMT_PROXY_LIST_ALL, "proxy_list_all",
      "SELECT " PROXY_COLS " FROM workspace_proxies ORDER BY created_at, name"),
    /* A deleted proxy is gone as far as updates go: its token no longer authenticates, and
     * reviving its URL or name would surprise whoever deleted it. */
    Q(STMT_PROXY_UPDATE, "proxy_update",
      "UPDATE workspace_proxies SET name = $2, display_name = $3, icon = $4, updated_at = $5 "
      "WHERE id = $1 AND deleted = false"),
    Q(STMT_PROXY_UPDATE_HASH, "proxy_update_hash",
      "UPDATE workspace_proxies SET name = $2, display_name = $3, icon = $4, updated_at = $5, "
      "token_hashed_secret = $6 WHERE id = $1 AND deleted = false"),
    Q(STMT_PROXY_REGISTER, "proxy_register",
      "UPDATE workspace_proxies SET url = $2, wildcard_hostname = $3, derp_enabled = $4, "
      "derp_only = $5, version = $6, updated_at = $7 WHERE id = $1 AND deleted = false"),
    Q(STMT_PROXY_DELETE, "proxy_delete",
      "UPDATE workspace_proxies SET deleted = true, updated_at = $2 "
      "WHERE id = $1 AND deleted = false"),
    /* created_at is kept from the first registration. */
    Q(STMT_REPLICA_UPSERT, "replica_upsert",
      "INSERT INTO replicas (" REPLICA_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
      "ON CONFLICT (id) DO UPDATE SET proxy_id = excluded.proxy_id, "
      "hostname = excluded.hostname, version = excluded.version, "
      "relay_address = excluded.relay_address, error = excluded.error, "
      "region_id = excluded.region_id, updated_at = excluded.updated_at, "
      "stopped_at = excluded.stopped_at"),
    Q(STMT_REPLICA_BY_ID, "replica_by_id", "SELECT " REPLICA_COLS " FROM replicas WHERE id = $1"),
    Q(STMT_REPLICA_LIST, "replica_list",
      "SELECT " REPLICA_COLS " FROM replicas WHERE proxy_id = $1 AND stopped_at = 0 "
      "ORDER BY created_at, id"),
    Q(STMT_REPLICA_STOP, "replica_stop",
      "UPDATE replicas SET stopped_at = $2, updated_at = $2 WHERE id = $1"),
    Q(STMT_WORKSPACE_INSERT, "workspace_insert",
      "INSERT INTO workspaces (" WORKSPACE_COLS ") VALUES ($1, $2, $3, $4, $5, $6, false)"),
    Q(STMT_WORKSPACE_BY_ID, "workspace_by_id",
      "SELECT " WORKSPACE_COLS " FROM workspaces WHERE id = $1"),
    Q(STMT_WORKSPACE_BY_OWNER_NAME, "workspace_by_owner_name",
      "SELECT " WORKSPACE_COLS " FROM workspaces "
      "WHERE owner_id = $1 AND lower(name) = lower($2) AND deleted = false"),
    /* $1 owner id, $2 a LIKE pattern on the lower-cased name ('' = any). Ordered as Coder
     * lists workspaces (owner's username, then name), so pages are stable. */
    Q(STMT_WORKSPACE_LIST, "workspace_list",
      "SELECT w.id, w.owner_id, w.name, w.created_at, w.updated_at, w.last_used_at, "
      "w.deleted " WORKSPACE_FILTER
      " ORDER BY lower(u.username), lower(w.name), w.id LIMIT $3 OFFSET $4"),
    Q(STMT_WORKSPACE_COUNT, "workspace_count", "SELECT COUNT(*) " WORKSPACE_FILTER),
    Q(STMT_WORKSPACE_DELETE, "workspace_delete",
      "UPDATE workspaces SET deleted = true, updated_at = $2 WHERE id = $1 AND deleted = false"),
    Q(STMT_WORKSPACE_TOUCH, "workspace_touch",
      "UPDATE workspaces SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2"),
    Q(STMT_AGENT_INSERT, "agent_insert",
      "INSERT INTO workspace_agents (" AGENT_COLS ") "
      "VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, '', 'created')"),
    Q(STMT_AGENT_BY_ID, "agent_by_id", "SELECT " AGENT_COLS " FROM workspace_agents WHERE id = $1"),
    /* Only agents of live workspaces authenticate. */
    Q(STMT_AGENT_BY_TOKEN, "agent_by_token",
      "SELECT a.id, a.workspace_id, a.name, a.auth_token_hash, a.created_at, a.updated_at, "
      "a.first_connected_at, a.last_connected_at, a.disconnected_at, a.version, "
      "a.lifecycle_state FROM workspace_agents a JOIN workspaces w ON w.id = a.workspace_id "
      "WHERE a.auth_token_hash = $1 AND w.deleted = false"),
    Q(STMT_AGENT_LIST, "agent_list",
      "SELECT " AGENT_COLS " FROM workspace_agents WHERE workspace_id = $1 ORDER BY name"),
    /* $2 > 0: the agent connected at $2; else it disconnected at $3. */
    Q(STMT_AGENT_CONNECTION, "agent_connection",
      "UPDATE workspace_agents SET "
      "first_connected_at = CASE WHEN first_connected_at = 0 AND $2 > 0 THEN $2 "
      "ELSE first_connected_at END, "
      "last_connected_at = CASE WHEN $2 > 0 THEN $2 ELSE last_connected_at END, "
      "disconnected_at = $3, updated_at = $4 WHERE id = $1"),
    Q(STMT_AGENT_DISCONNECT_ALL, "agent_disconnect_all",
      "UPDATE workspace_agents SET disconnected_at = $1, updated_at = $1 "
      "WHERE last_connected_at > disconnected_at"),
    Q(STMT_APP_INSERT, "app_insert",
      "INSERT INTO workspace_apps (" APP_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
    Q(STMT_CRYPTO_KEY_INSERT, "crypto_key_insert",
      "INSERT INTO crypto_keys (feature, sequence, secret, starts_at, deletes_at) "
      "SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3, 0 FROM crypto_keys WHERE feature = $1 "
      "RETURNING sequence"),
    Q(STMT_CRYPTO_KEY_RETIRE, "crypto_key_retire",
      "UPDATE crypto_keys SET deletes_at = $3 WHERE feature = $1 AND sequence < $2 AND "
      "deletes_at = 0"),
    Q(STMT_CRYPTO_KEY_LIST, "crypto_key_list",
      "SELECT feature, sequence, secret, starts_at, deletes_at FROM crypto_keys "
      "WHERE feature = $1 AND (deletes_at = 0 OR deletes_at > $2) ORDER BY sequence"),
    Q(STMT_APP_LIST, "app_list",
      "SELECT " APP_COLS " FROM workspace_apps WHERE agent_id = $1 ORDER BY slug"),
    Q(STMT_APP_STAT_UPSERT, "app_stat_upsert",
      "INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, "
      "slug_or_port, session_id, session_started_at, session_ended_at, requests) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (agent_id, session_id) DO UPDATE "
      "SET session_ended_at = CASE WHEN excluded.session_ended_at > "
      "workspace_app_stats.session_ended_at THEN excluded.session_ended_at ELSE "
      "workspace_app_stats.session_ended_at END, requests = CASE WHEN excluded.requests > "
      "workspace_app_stats.requests THEN excluded.requests ELSE workspace_app_stats.requests END"),
};

const struct store_query *
store_query_get(enum store_stmt id)
{
    return &queries[id];
}

/* ---- records ---------------------------------------------------------------------------- */

void
store_user_fini(struct store_user *u)
{
    if (u == NULL)
        return;
    free(u->email);
    free(u->username);
    free(u->name);
    free(u->hashed_password);
    free(u->status);
    free(u->login_type);
    free(u->rbac_roles);
    memset(u, 0, sizeof(*u));
}

void
store_apikey_fini(struct store_apikey *k)
{
    if (k == NULL)
        return;
    free(k->login_type);
    free(k->scope);
    free(k->token_name);
    free(k->ip_address);
    memset(k, 0, sizeof(*k));
}

void
store_proxy_fini(struct store_proxy *p)
{
    if (p == NULL)
        return;
    free(p->name);
    free(p->display_name);
    free(p->icon);
    free(p->url);
    free(p->wildcard_hostname);
    free(p->version);
    memset(p, 0, sizeof(*p));
}

void
store_replica_fini(struct store_replica *r)
{
    if (r == NULL)
        return;
    free(r->hostname);
    free(r->version);
    free(r->relay_address);
    free(r->error);
    memset(r, 0, sizeof(*r));
}

void
store_proxies_free(struct store_proxy *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        store_proxy_fini(&v[i]);
    free(v);
}

void
store_replicas_free(struct store_replica *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        store_replica_fini(&v[i]);
    free(v);
}

/* ---- running statements ----------------------------------------------------------------- */

static int
run(struct store *s, enum store_stmt id, const struct store_arg *args, size_t nargs,
    store_row_fn fn, void *arg, int64_t *changes)
{
    return s->be->query(s, &queries[id], args, nargs, fn, arg, changes);
}

/* Runs an UPDATE or DELETE of one row by id: no matching row is STORE_ENOTFOUND. */
static int
run_one(struct store *s, enum store_stmt id, const struct store_arg *args, size_t nargs)
{
    int64_t changes = 0;
    int rc = run(s, id, args, nargs, NULL, NULL, &changes);
    if (rc == 0 && changes == 0)
        rc = STORE_ENOTFOUND;
    return rc;
}

/* What a row callback needs: the store (for the column readers), where to put the record,
 * and, for lists, the array being grown. */
struct fetch {
    struct store *s;
    void *out;     /* one record, or the growing array */
    size_t n, cap; /* lists */
    bool found;
};

static char *
col_str(const struct fetch *f, const struct store_row *row, int col)
{
    return xstrdup(f->s->be->col_text(row, col));
}

static void
col_copy(const struct fetch *f, const struct store_row *row, int col, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s", f->s->be->col_text(row, col));
}

static int
col_hash(const struct fetch *f, const struct store_row *row, int col, uint8_t out[32],
         const char *table)
{
    const char *h = f->s->be->col_text(row, col);
    if (hex_decode(h, strlen(h), out, 32) != 32) {
        /* The value is a secret's hash: say where, never what. */
        log_error("store: malformed hash in a %s row", table);
        return STORE_EIO;
    }
    return 0;
}

/* Reserves the next slot of a list, growing it by doubling. */
static void *
list_slot(struct fetch *f, size_t size)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->out = xrealloc(f->out, f->cap * size);
    }
    void *slot = (char *)f->out + f->n * size;
    memset(slot, 0, size);
    f->n++;
    return slot;
}

/* Runs a single-row lookup into tmp (zeroed, sized size) and moves it to out. out is written
 * only at the end, so an id argument that points into *out stays valid while binding; on any
 * failure out is left zeroed. */
static int
get_one(struct store *s, enum store_stmt id, const struct store_arg *args, size_t nargs,
        store_row_fn fn, void *tmp, void *out, size_t size, void (*fini)(void *))
{
    struct fetch f = {.s = s, .out = tmp};
    int rc = run(s, id, args, nargs, fn, &f, NULL);
    if (rc == 0 && !f.found)
        rc = STORE_ENOTFOUND;
    if (rc < 0) {
        fini(tmp);
        memset(out, 0, size);
        return rc;
    }
    memcpy(out, tmp, size);
    return 0;
}

/* ---- transactions ----------------------------------------------------------------------- */

int
store_begin(struct store *s)
{
    if (s->in_tx) {
        /* Nesting would silently merge two callers' units of work; it is a bug here. */
        log_error("store: begin inside a transaction (nested transactions are not supported)");
        return STORE_EIO;
    }
    int rc = s->be->begin(s);
    if (rc == 0)
        s->in_tx = true;
    return rc;
}

int
store_commit(struct store *s)
{
    if (!s->in_tx) {
        log_error("store: commit without a transaction");
        return STORE_EIO;
    }
    int rc = s->be->commit(s);
    if (rc < 0)
        s->be->rollback(s); /* a failed commit loses the unit of work; end it cleanly */
    s->in_tx = false;
    return rc;
}

void
store_rollback(struct store *s)
{
    if (s == NULL || !s->in_tx)
        return;
    s->be->rollback(s);
    s->in_tx = false;
}

void
store_close(struct store *s)
{
    if (s == NULL)
        return;
    store_rollback(s);
    s->be->close(s);
    free(s);
}

/* ---- site configs ----------------------------------------------------------------------- */

static int
config_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    if (!f->found)
        f->out = col_str(f, row, 0);
    f->found = true;
    return 0;
}

int
store_config_get(struct store *s, const char *key, char **value)
{
    struct store_arg args[] = {ARG_TEXT(key)};
    struct fetch f = {.s = s};
    *value = NULL;
    int rc = run(s, STMT_CONFIG_GET, args, ARRAY_LEN(args), config_row, &f, NULL);
    if (rc == 0 && !f.found)
        rc = STORE_ENOTFOUND;
    if (rc < 0) {
        free(f.out);
        return rc;
    }
    *value = f.out;
    return 0;
}

int
store_config_set(struct store *s, const char *key, const char *value)
{
    struct store_arg args[] = {ARG_TEXT(key), ARG_TEXT(value)};
    return run(s, STMT_CONFIG_SET, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

/* ---- users ------------------------------------------------------------------------------ */

static int
user_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    struct store_user *u = f->out;
    const struct store_backend *be = f->s->be;
    if (f->found)
        return 0;
    f->found = true;
    col_copy(f, row, 0, u->id, sizeof(u->id));
    u->email = col_str(f, row, 1);
    u->username = col_str(f, row, 2);
    u->name = col_str(f, row, 3);
    u->hashed_password = col_str(f, row, 4);
    u->status = col_str(f, row, 5);
    u->login_type = col_str(f, row, 6);
    u->rbac_roles = col_str(f, row, 7);
    u->created_at = be->col_int(row, 8);
    u->updated_at = be->col_int(row, 9);
    u->last_seen_at = be->col_int(row, 10);
    return 0;
}

static void
user_fini_any(void *p)
{
    store_user_fini(p);
}

static int
user_get(struct store *s, enum store_stmt id, const char *key, struct store_user *out)
{
    struct store_arg args[] = {ARG_TEXT(key)};
    struct store_user tmp = {0};
    return get_one(s, id, args, ARRAY_LEN(args), user_row, &tmp, out, sizeof(*out), user_fini_any);
}

int
store_user_insert(struct store *s, const struct store_user *u)
{
    struct store_arg args[] = {
        ARG_TEXT(u->id),         ARG_TEXT(u->email),           ARG_TEXT(u->username),
        ARG_TEXT(u->name),       ARG_TEXT(u->hashed_password), ARG_TEXT(u->status),
        ARG_TEXT(u->login_type), ARG_TEXT(u->rbac_roles),      ARG_INT(u->created_at),
        ARG_INT(u->updated_at),  ARG_INT(u->last_seen_at),
    };
    return run(s, STMT_USER_INSERT, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

/* Reads a single integer result (a count, a RETURNING value) into *(int64_t *)f->out. */
static int
int_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    *(int64_t *)f->out = f->s->be->col_int(row, 0);
    f->found = true;
    return 0;
}

int
store_user_count(struct store *s, int64_t *count)
{
    struct fetch f = {.s = s, .out = count};
    *count = 0;
    return run(s, STMT_USER_COUNT, NULL, 0, int_row, &f, NULL);
}

int
store_user_by_id(struct store *s, const char *id, struct store_user *out)
{
    return user_get(s, STMT_USER_BY_ID, id, out);
}

int
store_user_by_email(struct store *s, const char *email, struct store_user *out)
{
    return user_get(s, STMT_USER_BY_EMAIL, email, out);
}

int
store_user_by_username(struct store *s, const char *username, struct store_user *out)
{
    return user_get(s, STMT_USER_BY_USERNAME, username, out);
}

int
store_user_touch(struct store *s, const char *id, int64_t last_seen_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(last_seen_at)};
    return run_one(s, STMT_USER_TOUCH, args, ARRAY_LEN(args));
}

/* ---- API keys --------------------------------------------------------------------------- */

static int
apikey_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    struct store_apikey *k = f->out;
    const struct store_backend *be = f->s->be;
    if (f->found)
        return 0;
    f->found = true;
    col_copy(f, row, 0, k->id, sizeof(k->id));
    col_copy(f, row, 1, k->user_id, sizeof(k->user_id));
    k->lifetime_seconds = be->col_int(row, 3);
    k->expires_at = be->col_int(row, 4);
    k->created_at = be->col_int(row, 5);
    k->updated_at = be->col_int(row, 6);
    k->last_used = be->col_int(row, 7);
    k->login_type = col_str(f, row, 8);
    k->scope = col_str(f, row, 9);
    k->token_name = col_str(f, row, 10);
    k->ip_address = col_str(f, row, 11);
    return col_hash(f, row, 2, k->hashed_secret, "api_keys");
}

static void
apikey_fini_any(void *p)
{
    store_apikey_fini(p);
}

int
store_apikey_insert(struct store *s, const struct store_apikey *k)
{
    char hash[65];
    hex_encode(k->hashed_secret, sizeof(k->hashed_secret), hash);
    struct store_arg args[] = {
        ARG_TEXT(k->id),         ARG_TEXT(k->user_id),
        ARG_TEXT(hash),          ARG_INT(k->lifetime_seconds),
        ARG_INT(k->expires_at),  ARG_INT(k->created_at),
        ARG_INT(k->updated_at),  ARG_INT(k->last_used),
        ARG_TEXT(k->login_type), ARG_TEXT(k->scope),
        ARG_TEXT(k->token_name), ARG_TEXT(k->ip_address),
    };
    return run(s, STMT_APIKEY_INSERT, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

int
store_apikey_by_id(struct store *s, const char *id, struct store_apikey *out)
{
    struct store_arg args[] = {ARG_TEXT(id)};
    struct store_apikey tmp = {0};
    return get_one(s, STMT_APIKEY_BY_ID, args, ARRAY_LEN(args), apikey_row, &tmp, out, sizeof(*out),
                   apikey_fini_any);
}

int
store_apikey_update_usage(struct store *s, const char *id, int64_t last_used, int64_t expires_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(last_used), ARG_INT(expires_at)};
    return run_one(s, STMT_APIKEY_UPDATE_USAGE, args, ARRAY_LEN(args));
}

int
store_apikey_delete(struct store *s, const char *id)
{
    struct store_arg args[] = {ARG_TEXT(id)};
    return run_one(s, STMT_APIKEY_DELETE, args, ARRAY_LEN(args));
}

/* ---- workspace proxies ------------------------------------------------------------------ */

static int
proxy_fill(const struct fetch *f, const struct store_row *row, struct store_proxy *p)
{
    const struct store_backend *be = f->s->be;
    col_copy(f, row, 0, p->id, sizeof(p->id));
    p->name = col_str(f, row, 1);
    p->display_name = col_str(f, row, 2);
    p->icon = col_str(f, row, 3);
    p->url = col_str(f, row, 4);
    p->wildcard_hostname = col_str(f, row, 5);
    p->created_at = be->col_int(row, 6);
    p->updated_at = be->col_int(row, 7);
    p->deleted = be->col_bool(row, 8);
    p->region_id = be->col_int(row, 10);
    p->derp_enabled = be->col_bool(row, 11);
    p->derp_only = be->col_bool(row, 12);
    p->version = col_str(f, row, 13);
    return col_hash(f, row, 9, p->token_hashed_secret, "workspace_proxies");
}

static int
proxy_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    if (f->found)
        return 0;
    f->found = true;
    return proxy_fill(f, row, f->out);
}

static int
proxy_list_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    return proxy_fill(f, row, list_slot(f, sizeof(struct store_proxy)));
}

static void
proxy_fini_any(void *p)
{
    store_proxy_fini(p);
}

static int
proxy_get(struct store *s, enum store_stmt id, const char *key, struct store_proxy *out)
{
    struct store_arg args[] = {ARG_TEXT(key)};
    struct store_proxy tmp = {0};
    return get_one(s, id, args, ARRAY_LEN(args), proxy_row, &tmp, out, sizeof(*out),
                   proxy_fini_any);
}

int
store_proxy_insert(struct store *s, struct store_proxy *p)
{
    char hash[65];
    int64_t region = 0;
    struct fetch f = {.s = s, .out = &region};
    hex_encode(p->token_hashed_secret, sizeof(p->token_hashed_secret), hash);
    struct store_arg args[] = {
        ARG_TEXT(p->id),           ARG_TEXT(p->name),      ARG_TEXT(p->display_name),
        ARG_TEXT(p->icon),         ARG_TEXT(p->url),       ARG_TEXT(p->wildcard_hostname),
        ARG_INT(p->created_at),    ARG_INT(p->updated_at), ARG_TEXT(hash),
        ARG_BOOL(p->derp_enabled), ARG_BOOL(p->derp_only), ARG_TEXT(p->version),
    };
    int rc = run(s, STMT_PROXY_INSERT, args, ARRAY_LEN(args), int_row, &f, NULL);
    if (rc == 0 && !f.found) {
        log_error("store: proxy_insert returned no region id");
        rc = STORE_EIO;
    }
    if (rc == 0)
        p->region_id = region;
    return rc;
}

int
store_proxy_by_id(struct store *s, const char *id, struct store_proxy *out)
{
    return proxy_get(s, STMT_PROXY_BY_ID, id, out);
}

int
store_proxy_by_name(struct store *s, const char *name, struct store_proxy *out)
{
    return proxy_get(s, STMT_PROXY_BY_NAME, name, out);
}

int
store_proxy_list(struct store *s, bool include_deleted, struct store_proxy **out, size_t *n)
{
    struct fetch f = {.s = s};
    int rc = run(s, include_deleted ? STMT_PROXY_LIST_ALL : STMT_PROXY_LIST, NULL, 0,
                 proxy_list_row, &f, NULL);
    if (rc < 0) {
        store_proxies_free(f.out, f.n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = f.out;
    *n = f.n;
    return 0;
}

int
store_proxy_update(struct store *s, const char *id, const char *name, const char *display_name,
                   const char *icon, const uint8_t *new_hash, int64_t updated_at)
{
    char hash[65] = "";
    if (new_hash != NULL)
        hex_encode(new_hash, 32, hash);
    struct store_arg args[] = {ARG_TEXT(id),   ARG_TEXT(name),      ARG_TEXT(display_name),
                               ARG_TEXT(icon), ARG_INT(updated_at), ARG_TEXT(hash)};
    if (new_hash == NULL)
        return run_one(s, STMT_PROXY_UPDATE, args, ARRAY_LEN(args) - 1);
    return run_one(s, STMT_PROXY_UPDATE_HASH, args, ARRAY_LEN(args));
}

int
store_proxy_register(struct store *s, const char *id, const char *url,
                     const char *wildcard_hostname, bool derp_enabled, bool derp_only,
                     const char *version, int64_t updated_at)
{
    struct store_arg args[] = {
        ARG_TEXT(id),        ARG_TEXT(url),     ARG_TEXT(wildcard_hostname), ARG_BOOL(derp_enabled),
        ARG_BOOL(derp_only), ARG_TEXT(version), ARG_INT(updated_at),
    };
    return run_one(s, STMT_PROXY_REGISTER, args, ARRAY_LEN(args));
}

int
store_proxy_delete(struct store *s, const char *id, int64_t updated_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(updated_at)};
    return run_one(s, STMT_PROXY_DELETE, args, ARRAY_LEN(args));
}

/* ---- replicas --------------------------------------------------------------------------- */

static void
replica_fill(const struct fetch *f, const struct store_row *row, struct store_replica *r)
{
    const struct store_backend *be = f->s->be;
    col_copy(f, row, 0, r->id, sizeof(r->id));
    col_copy(f, row, 1, r->proxy_id, sizeof(r->proxy_id));
    r->hostname = col_str(f, row, 2);
    r->version = col_str(f, row, 3);
    r->relay_address = col_str(f, row, 4);
    r->error = col_str(f, row, 5);
    r->region_id = be->col_int(row, 6);
    r->created_at = be->col_int(row, 7);
    r->updated_at = be->col_int(row, 8);
    r->stopped_at = be->col_int(row, 9);
}

static int
replica_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    if (!f->found)
        replica_fill(f, row, f->out);
    f->found = true;
    return 0;
}

static int
replica_list_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    replica_fill(f, row, list_slot(f, sizeof(struct store_replica)));
    return 0;
}

static void
replica_fini_any(void *p)
{
    store_replica_fini(p);
}

int
store_replica_upsert(struct store *s, const struct store_replica *r)
{
    struct store_arg args[] = {
        ARG_TEXT(r->id),        ARG_TEXT(r->proxy_id),      ARG_TEXT(r->hostname),
        ARG_TEXT(r->version),   ARG_TEXT(r->relay_address), ARG_TEXT(r->error),
        ARG_INT(r->region_id),  ARG_INT(r->created_at),     ARG_INT(r->updated_at),
        ARG_INT(r->stopped_at),
    };
    return run(s, STMT_REPLICA_UPSERT, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

int
store_replica_by_id(struct store *s, const char *id, struct store_replica *out)
{
    struct store_arg args[] = {ARG_TEXT(id)};
    struct store_replica tmp = {0};
    return get_one(s, STMT_REPLICA_BY_ID, args, ARRAY_LEN(args), replica_row, &tmp, out,
                   sizeof(*out), replica_fini_any);
}

int
store_replica_list(struct store *s, const char *proxy_id, struct store_replica **out, size_t *n)
{
    struct store_arg args[] = {ARG_TEXT(proxy_id)};
    struct fetch f = {.s = s};
    int rc = run(s, STMT_REPLICA_LIST, args, ARRAY_LEN(args), replica_list_row, &f, NULL);
    if (rc < 0) {
        store_replicas_free(f.out, f.n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = f.out;
    *n = f.n;
    return 0;
}

int
store_replica_stop(struct store *s, const char *id, int64_t stopped_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(stopped_at)};
    return run_one(s, STMT_REPLICA_STOP, args, ARRAY_LEN(args));
}

/* ---- workspaces, agents, apps ----------------------------------------------------------- */

void
store_workspace_fini(struct store_workspace *w)
{
    if (w == NULL)
        return;
    free(w->name);
    memset(w, 0, sizeof(*w));
}

void
store_agent_fini(struct store_agent *a)
{
    if (a == NULL)
        return;
    free(a->name);
    free(a->version);
    free(a->lifecycle_state);
    memset(a, 0, sizeof(*a));
}

void
store_app_fini(struct store_app *a)
{
    if (a == NULL)
        return;
    free(a->slug);
    free(a->display_name);
    free(a->url);
    free(a->sharing_level);
    memset(a, 0, sizeof(*a));
}

void
store_workspaces_free(struct store_workspace *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_workspace_fini(&v[i]);
    free(v);
}

void
store_agents_free(struct store_agent *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_agent_fini(&v[i]);
    free(v);
}

void
store_apps_free(struct store_app *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_app_fini(&v[i]);
    free(v);
}

static void
workspace_fill(const struct fetch *f, const struct store_row *row, struct store_workspace *w)
{
    const struct store_backend *be = f->s->be;
    col_copy(f, row, 0, w->id, sizeof(w->id));
    col_copy(f, row, 1, w->owner_id, sizeof(w->owner_id));
    w->name = col_str(f, row, 2);
    w->created_at = be->col_int(row, 3);
    w->updated_at = be->col_int(row, 4);
    w->last_used_at = be->col_int(row, 5);
    w->deleted = be->col_bool(row, 6);
}

static int
workspace_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    if (!f->found)
        workspace_fill(f, row, f->out);
    f->found = true;
    return 0;
}

static int
workspace_list_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    workspace_fill(f, row, list_slot(f, sizeof(struct store_workspace)));
    return 0;
}

static void
workspace_fini_any(void *p)
{
    store_workspace_fini(p);
}

static int
agent_fill(const struct fetch *f, const struct store_row *row, struct store_agent *a)
{
    const struct store_backend *be = f->s->be;
    col_copy(f, row, 0, a->id, sizeof(a->id));
    col_copy(f, row, 1, a->workspace_id, sizeof(a->workspace_id));
    a->name = col_str(f, row, 2);
    a->created_at = be->col_int(row, 4);
    a->updated_at = be->col_int(row, 5);
    a->first_connected_at = be->col_int(row, 6);
    a->last_connected_at = be->col_int(row, 7);
    a->disconnected_at = be->col_int(row, 8);
    a->version = col_str(f, row, 9);
    a->lifecycle_state = col_str(f, row, 10);
    return col_hash(f, row, 3, a->token_hash, "workspace_agents");
}

static int
agent_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    if (f->found)
        return 0;
    f->found = true;
    return agent_fill(f, row, f->out);
}

static int
agent_list_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    return agent_fill(f, row, list_slot(f, sizeof(struct store_agent)));
}

static void
agent_fini_any(void *p)
{
    store_agent_fini(p);
}

static int
app_list_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    const struct store_backend *be = f->s->be;
    struct store_app *a = list_slot(f, sizeof(struct store_app));
    col_copy(f, row, 0, a->id, sizeof(a->id));
    col_copy(f, row, 1, a->agent_id, sizeof(a->agent_id));
    a->slug = col_str(f, row, 2);
    a->display_name = col_str(f, row, 3);
    a->url = col_str(f, row, 4);
    a->subdomain = be->col_bool(row, 5);
    a->sharing_level = col_str(f, row, 6);
    a->created_at = be->col_int(row, 7);
    return 0;
}

/* Runs a list query with one text argument; on failure *out is NULL and *n 0. */
static int
list_by(struct store *s, enum store_stmt id, const char *key, store_row_fn fn,
        void (*free_list)(void *, size_t), void **out, size_t *n)
{
    struct store_arg args[] = {ARG_TEXT(key)};
    struct fetch f = {.s = s};
    int rc = run(s, id, args, key ? 1 : 0, fn, &f, NULL);
    if (rc < 0) {
        free_list(f.out, f.n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = f.out;
    *n = f.n;
    return 0;
}

static void
agents_free_any(void *v, size_t n)
{
    store_agents_free(v, n);
}

static void
apps_free_any(void *v, size_t n)
{
    store_apps_free(v, n);
}

int
store_workspace_create(struct store *s, const struct store_workspace *w,
                       const struct store_agent *agent, const struct store_app *apps, size_t napps)
{
    bool own_tx = !s->in_tx;
    if (own_tx && store_begin(s) < 0)
        return STORE_EIO;
    struct store_arg wargs[] = {ARG_TEXT(w->id),        ARG_TEXT(w->owner_id),
                                ARG_TEXT(w->name),      ARG_INT(w->created_at),
                                ARG_INT(w->updated_at), ARG_INT(w->last_used_at)};
    int rc = run(s, STMT_WORKSPACE_INSERT, wargs, ARRAY_LEN(wargs), NULL, NULL, NULL);
    if (rc == 0) {
        char hash[65];
        hex_encode(agent->token_hash, sizeof(agent->token_hash), hash);
        struct store_arg aargs[] = {ARG_TEXT(agent->id),        ARG_TEXT(w->id),
                                    ARG_TEXT(agent->name),      ARG_TEXT(hash),
                                    ARG_INT(agent->created_at), ARG_INT(agent->updated_at)};
        rc = run(s, STMT_AGENT_INSERT, aargs, ARRAY_LEN(aargs), NULL, NULL, NULL);
    }
    for (size_t i = 0; rc == 0 && i < napps; i++) {
        const struct store_app *a = &apps[i];
        struct store_arg args[] = {
            ARG_TEXT(a->id),
            ARG_TEXT(agent->id),
            ARG_TEXT(a->slug),
            ARG_TEXT(a->display_name),
            ARG_TEXT(a->url),
            ARG_BOOL(a->subdomain),
            ARG_TEXT(a->sharing_level),
            ARG_INT(a->created_at),
        };
        rc = run(s, STMT_APP_INSERT, args, ARRAY_LEN(args), NULL, NULL, NULL);
    }
    if (!own_tx)
        return rc;
    if (rc < 0) {
        store_rollback(s);
        return rc;
    }
    return store_commit(s);
}

int
store_workspace_by_id(struct store *s, const char *id, struct store_workspace *out)
{
    struct store_arg args[] = {ARG_TEXT(id)};
    struct store_workspace tmp = {0};
    return get_one(s, STMT_WORKSPACE_BY_ID, args, ARRAY_LEN(args), workspace_row, &tmp, out,
                   sizeof(*out), workspace_fini_any);
}

int
store_workspace_by_owner_name(struct store *s, const char *owner_id, const char *name,
                              struct store_workspace *out)
{
    struct store_arg args[] = {ARG_TEXT(owner_id), ARG_TEXT(name)};
    struct store_workspace tmp = {0};
    return get_one(s, STMT_WORKSPACE_BY_OWNER_NAME, args, ARRAY_LEN(args), workspace_row, &tmp, out,
                   sizeof(*out), workspace_fini_any);
}

/* "%name%" for LIKE, lower-cased, with LIKE's own characters escaped: a filter of "a_b" or
 * "100%" matches those characters only. */
static char *
like_pattern(const char *name)
{
    struct buf b = {0};
    buf_putc(&b, '%');
    for (const char *p = name; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            buf_putc(&b, '\\');
        buf_putc(&b, (char)tolower((unsigned char)*p));
    }
    buf_putc(&b, '%');
    return buf_steal(&b);
}

int
store_workspace_list(struct store *s, const struct store_workspace_filter *flt,
                     struct store_workspace **out, size_t *n, int64_t *total)
{
    char *pattern = flt->name && flt->name[0] ? like_pattern(flt->name) : xstrdup("");
    struct store_arg args[] = {ARG_TEXT(flt->owner_id), ARG_TEXT(pattern),
                               ARG_INT(flt->limit > 0 ? flt->limit : INT64_MAX),
                               ARG_INT(flt->offset > 0 ? flt->offset : 0)};
    struct fetch f = {.s = s};
    struct fetch cf = {.s = s, .out = total};
    *total = 0;
    int rc = run(s, STMT_WORKSPACE_LIST, args, ARRAY_LEN(args), workspace_list_row, &f, NULL);
    if (rc == 0)
        rc = run(s, STMT_WORKSPACE_COUNT, args, 2, int_row, &cf, NULL);
    free(pattern);
    if (rc < 0) {
        store_workspaces_free(f.out, f.n);
        *out = NULL;
        *n = 0;
        *total = 0;
        return rc;
    }
    *out = f.out;
    *n = f.n;
    return 0;
}

int
store_workspace_delete(struct store *s, const char *id, int64_t updated_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(updated_at)};
    return run_one(s, STMT_WORKSPACE_DELETE, args, ARRAY_LEN(args));
}

int
store_workspace_touch(struct store *s, const char *id, int64_t last_used_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(last_used_at)};
    return run(s, STMT_WORKSPACE_TOUCH, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

int
store_agent_by_id(struct store *s, const char *id, struct store_agent *out)
{
    struct store_arg args[] = {ARG_TEXT(id)};
    struct store_agent tmp = {0};
    return get_one(s, STMT_AGENT_BY_ID, args, ARRAY_LEN(args), agent_row, &tmp, out, sizeof(*out),
                   agent_fini_any);
}

int
store_agent_by_token_hash(struct store *s, const uint8_t hash[32], struct store_agent *out)
{
    char hex[65];
    hex_encode(hash, 32, hex);
    struct store_arg args[] = {ARG_TEXT(hex)};
    struct store_agent tmp = {0};
    int rc = get_one(s, STMT_AGENT_BY_TOKEN, args, ARRAY_LEN(args), agent_row, &tmp, out,
                     sizeof(*out), agent_fini_any);
    /* The index found it; compare again in constant time all the same. */
    if (rc == 0 && !ct_equal(out->token_hash, hash, 32)) {
        store_agent_fini(out);
        rc = STORE_ENOTFOUND;
    }
    return rc;
}

int
store_agent_list(struct store *s, const char *workspace_id, struct store_agent **out, size_t *n)
{
    return list_by(s, STMT_AGENT_LIST, workspace_id, agent_list_row, agents_free_any, (void **)out,
                   n);
}

int
store_agent_set_connection(struct store *s, const char *id, int64_t connected_at,
                           int64_t disconnected_at, int64_t updated_at)
{
    struct store_arg args[] = {ARG_TEXT(id), ARG_INT(connected_at), ARG_INT(disconnected_at),
                               ARG_INT(updated_at)};
    return run_one(s, STMT_AGENT_CONNECTION, args, ARRAY_LEN(args));
}

int
store_agents_disconnect_all(struct store *s, int64_t now)
{
    struct store_arg args[] = {ARG_INT(now)};
    return run(s, STMT_AGENT_DISCONNECT_ALL, args, ARRAY_LEN(args), NULL, NULL, NULL);
}

int
store_app_list(struct store *s, const char *agent_id, struct store_app **out, size_t *n)
{
    return list_by(s, STMT_APP_LIST, agent_id, app_list_row, apps_free_any, (void **)out, n);
}

/* ---- crypto keys ------------------------------------------------------------------------ */

void
store_crypto_key_fini(struct store_crypto_key *k)
{
    if (k == NULL)
        return;
    free(k->feature);
    if (k->secret)
        OPENSSL_cleanse(k->secret, strlen(k->secret));
    free(k->secret);
    memset(k, 0, sizeof(*k));
}

void
store_crypto_keys_free(struct store_crypto_key *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_crypto_key_fini(&v[i]);
    free(v);
}

int
store_crypto_key_insert(struct store *s, const char *feature, const char *secret_hex,
                        int64_t starts_at, int64_t *sequence)
{
    int64_t seq = 0;
    struct fetch f = {.s = s, .out = &seq};
    struct store_arg args[] = {ARG_TEXT(feature), ARG_TEXT(secret_hex), ARG_INT(starts_at)};
    int rc = run(s, STMT_CRYPTO_KEY_INSERT, args, ARRAY_LEN(args), int_row, &f, NULL);
    if (rc == 0 && !f.found)
        rc = STORE_EIO;
    if (rc == 0 && sequence)
        *sequence = seq;
    return rc;
}

static int
crypto_key_row(const struct store_row *row, void *arg)
{
    struct fetch *f = arg;
    const struct store_backend *be = f->s->be;
    struct store_crypto_key *k = list_slot(f, sizeof(struct store_crypto_key));
    k->feature = col_str(f, row, 0);
    k->sequence = be->col_int(row, 1);
    k->secret = col_str(f, row, 2);
    k->starts_at = be->col_int(row, 3);
    k->deletes_at = be->col_int(row, 4);
    return 0;
}

int
store_crypto_key_list(struct store *s, const char *feature, int64_t now,
                      struct store_crypto_key **out, size_t *n)
{
    struct store_arg args[] = {ARG_TEXT(feature), ARG_INT(now)};
    struct fetch f = {.s = s};
    int rc = run(s, STMT_CRYPTO_KEY_LIST, args, ARRAY_LEN(args), crypto_key_row, &f, NULL);
    if (rc < 0) {
        store_crypto_keys_free(f.out, f.n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = f.out;
    *n = f.n;
    return 0;
}

int
store_app_stats_report(struct store *s, const struct store_app_stat *v, size_t n)
{
    int rc = store_begin(s);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct store_arg args[] = {
            ARG_TEXT(v[i].user_id),       ARG_TEXT(v[i].workspace_id), ARG_TEXT(v[i].agent_id),
            ARG_TEXT(v[i].access_method), ARG_TEXT(v[i].slug_or_port), ARG_TEXT(v[i].session_id),
            ARG_INT(v[i].started_at),     ARG_INT(v[i].ended_at),      ARG_INT(v[i].requests)};
        rc = run(s, STMT_APP_STAT_UPSERT, args, ARRAY_LEN(args), NULL, NULL, NULL);
        if (rc == 0)
            rc = store_workspace_touch(s, v[i].workspace_id, v[i].ended_at);
    }
    if (rc == 0)
        return store_commit(s);
    if (s->in_tx)
        store_rollback(s);
    return rc;
}

int
store_crypto_key_retire(struct store *s, const char *feature, int64_t before_sequence,
                        int64_t deletes_at)
{
    struct store_arg args[] = {ARG_TEXT(feature), ARG_INT(before_sequence), ARG_INT(deletes_at)};
    return run(s, STMT_CRYPTO_KEY_RETIRE, args, ARRAY_LEN(args), NULL, NULL, NULL);
}
