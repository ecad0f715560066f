/* Schema migrations: an ordered list of SQL steps, step i being schema version i + 1. Each
 * applied step is recorded in schema_migrations, so reopening a database applies only the steps
 * it lacks. Steps are append-only: never edit one that has shipped; add a new one instead.
 *
 * The SQL is portable between SQLite 3.40 and PostgreSQL 15 (see store-int.h). Ids are TEXT
 * (UUIDs in canonical lower-case form), times BIGINT milliseconds, hashes lower-case hex. */
#include "store-int.h"

#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"

#include <stdlib.h>

struct migration {
    const char *name;
    const char *sql;
};

static const struct migration migrations[] = {
    {"site_configs", "CREATE TABLE site_configs ("
                     "  key TEXT NOT NULL PRIMARY KEY,"
                     "  value TEXT NOT NULL DEFAULT ''"
                     ");"},
    /* Unique among live users, as Coder's idx_users_email / users_username_lower_idx are, so a
     * soft-deleted user would free their name. */
    {"users", "CREATE TABLE users ("
              "  id TEXT NOT NULL PRIMARY KEY,"
              "  email TEXT NOT NULL,"
              "  username TEXT NOT NULL,"
              "  name TEXT NOT NULL DEFAULT '',"
              "  hashed_password TEXT NOT NULL DEFAULT '',"
              "  status TEXT NOT NULL DEFAULT 'active',"
              "  login_type TEXT NOT NULL DEFAULT 'password',"
              "  rbac_roles TEXT NOT NULL DEFAULT '',"
              "  created_at BIGINT NOT NULL,"
              "  updated_at BIGINT NOT NULL,"
              "  last_seen_at BIGINT NOT NULL DEFAULT 0,"
              "  deleted BOOLEAN NOT NULL DEFAULT false"
              ");"
              "CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email))"
              "  WHERE deleted = false;"
              "CREATE UNIQUE INDEX users_username_lower_idx ON users (lower(username))"
              "  WHERE deleted = false;"},
    {"api_keys", "CREATE TABLE api_keys ("
                 "  id TEXT NOT NULL PRIMARY KEY,"
                 "  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
                 "  hashed_secret TEXT NOT NULL,"
                 "  lifetime_seconds BIGINT NOT NULL DEFAULT 0,"
                 "  expires_at BIGINT NOT NULL,"
                 "  created_at BIGINT NOT NULL,"
                 "  updated_at BIGINT NOT NULL,"
                 "  last_used BIGINT NOT NULL DEFAULT 0,"
                 "  login_type TEXT NOT NULL DEFAULT '',"
                 "  scope TEXT NOT NULL DEFAULT 'all',"
                 "  token_name TEXT NOT NULL DEFAULT '',"
                 "  ip_address TEXT NOT NULL DEFAULT ''"
                 ");"
                 "CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);"},
    /* Deleted proxies stay (soft delete) and keep their region_id, so ids are never reused;
     * only live ones hold their name. */
    {"workspace_proxies", "CREATE TABLE workspace_proxies ("
                          "  id TEXT NOT NULL PRIMARY KEY,"
                          "  name TEXT NOT NULL,"
                          "  display_name TEXT NOT NULL DEFAULT '',"
                          "  icon TEXT NOT NULL DEFAULT '',"
                          "  url TEXT NOT NULL DEFAULT '',"
                          "  wildcard_hostname TEXT NOT NULL DEFAULT '',"
                          "  created_at BIGINT NOT NULL,"
                          "  updated_at BIGINT NOT NULL,"
                          "  deleted BOOLEAN NOT NULL DEFAULT false,"
                          "  token_hashed_secret TEXT NOT NULL,"
                          "  region_id BIGINT NOT NULL UNIQUE,"
                          "  derp_enabled BOOLEAN NOT NULL DEFAULT true,"
                          "  derp_only BOOLEAN NOT NULL DEFAULT false,"
                          "  version TEXT NOT NULL DEFAULT ''"
                          ");"
                          "CREATE UNIQUE INDEX workspace_proxies_lower_name_idx"
                          "  ON workspace_proxies (lower(name)) WHERE deleted = false;"},
    {"replicas", "CREATE TABLE replicas ("
                 "  id TEXT NOT NULL PRIMARY KEY,"
                 "  proxy_id TEXT NOT NULL REFERENCES workspace_proxies (id) ON DELETE CASCADE,"
                 "  hostname TEXT NOT NULL DEFAULT '',"
                 "  version TEXT NOT NULL DEFAULT '',"
                 "  relay_address TEXT NOT NULL DEFAULT '',"
                 "  error TEXT NOT NULL DEFAULT '',"
                 "  region_id BIGINT NOT NULL DEFAULT 0,"
                 "  created_at BIGINT NOT NULL,"
                 "  updated_at BIGINT NOT NULL,"
                 "  stopped_at BIGINT NOT NULL DEFAULT 0"
                 ");"
                 "CREATE INDEX replicas_proxy_id_idx ON replicas (proxy_id, stopped_at);"},
    /* Workspaces are registered, not provisioned: one row each, with its agents and their
     * apps. A deleted workspace frees its name; its agents' tokens stop authenticating (the
     * lookup joins on deleted = false). Agent tokens are stored as SHA-256 hex. */
    {"workspaces",
     "CREATE TABLE workspaces ("
     "  id TEXT NOT NULL PRIMARY KEY,"
     "  owner_id TEXT NOT NULL REFERENCES users (id),"
     "  name TEXT NOT NULL,"
     "  created_at BIGINT NOT NULL,"
     "  updated_at BIGINT NOT NULL,"
     "  last_used_at BIGINT NOT NULL DEFAULT 0,"
     "  deleted BOOLEAN NOT NULL DEFAULT false"
     ");"
     "CREATE UNIQUE INDEX workspaces_owner_lower_name_idx"
     "  ON workspaces (owner_id, lower(name)) WHERE deleted = false;"
     "CREATE TABLE workspace_agents ("
     "  id TEXT NOT NULL PRIMARY KEY,"
     "  workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,"
     "  name TEXT NOT NULL,"
     "  auth_token_hash TEXT NOT NULL,"
     "  created_at BIGINT NOT NULL,"
     "  updated_at BIGINT NOT NULL,"
     "  first_connected_at BIGINT NOT NULL DEFAULT 0,"
     "  last_connected_at BIGINT NOT NULL DEFAULT 0,"
     "  disconnected_at BIGINT NOT NULL DEFAULT 0,"
     "  version TEXT NOT NULL DEFAULT '',"
     "  lifecycle_state TEXT NOT NULL DEFAULT 'created'"
     ");"
     "CREATE UNIQUE INDEX workspace_agents_token_idx ON workspace_agents (auth_token_hash);"
     "CREATE UNIQUE INDEX workspace_agents_name_idx"
     "  ON workspace_agents (workspace_id, lower(name));"
     "CREATE TABLE workspace_apps ("
     "  id TEXT NOT NULL PRIMARY KEY,"
     "  agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,"
     "  slug TEXT NOT NULL,"
     "  display_name TEXT NOT NULL DEFAULT '',"
     "  url TEXT NOT NULL,"
     "  subdomain BOOLEAN NOT NULL DEFAULT false,"
     "  sharing_level TEXT NOT NULL DEFAULT 'owner',"
     "  created_at BIGINT NOT NULL"
     ");"
     "CREATE UNIQUE INDEX workspace_apps_slug_idx ON workspace_apps (agent_id, slug);"},
    /* Keys the primary signs and encrypts with, per feature, in sequence; proxies fetch the
     * ones they need with their token. Secrets are hex; deletes_at 0 = not scheduled. */
    {"crypto_keys", "CREATE TABLE crypto_keys ("
                    "  feature TEXT NOT NULL,"
                    "  sequence BIGINT NOT NULL,"
                    "  secret TEXT NOT NULL,"
                    "  starts_at BIGINT NOT NULL,"
                    "  deletes_at BIGINT NOT NULL DEFAULT 0,"
                    "  PRIMARY KEY (feature, sequence)"
                    ");"},
    /* App usage reported by regions (CODER-COMPAT §2.8): one row per app session, merged when
     * a session is reported again (Coder's unique (agent_id, session_id)). */
    {"workspace_app_stats", "CREATE TABLE workspace_app_stats ("
                            "  user_id TEXT NOT NULL,"
                            "  workspace_id TEXT NOT NULL,"
                            "  agent_id TEXT NOT NULL,"
                            "  access_method TEXT NOT NULL,"
                            "  slug_or_port TEXT NOT NULL,"
                            "  session_id TEXT NOT NULL,"
                            "  session_started_at BIGINT NOT NULL,"
                            "  session_ended_at BIGINT NOT NULL,"
                            "  requests BIGINT NOT NULL,"
                            "  PRIMARY KEY (agent_id, session_id)"
                            ");"},
};

int64_t
store_schema_latest(void)
{
    return (int64_t)ARRAY_LEN(migrations);
}

struct version_ctx {
    const struct store_backend *be;
    int64_t version;
};

static int
version_row(const struct store_row *row, void *arg)
{
    struct version_ctx *ctx = arg;
    ctx->version = ctx->be->col_int(row, 0);
    return 0;
}

/* Reads the applied version (0 for a new database). Runs inside the migration transaction. */
static int
schema_version(struct store *s, int64_t *version)
{
    struct version_ctx ctx = {s->be, 0};
    int rc =
        s->be->query(s, store_query_get(STMT_MIGRATION_VERSION), NULL, 0, version_row, &ctx, NULL);
    *version = ctx.version;
    return rc;
}

int
store_migrate(struct store *s, char **err)
{
    int64_t latest = store_schema_latest(), current = 0;
    /* One transaction for the check and every step: a crash mid-way leaves the old schema,
     * and two processes opening a new database at once cannot both apply step 1. */
    if (store_begin(s) < 0) {
        *err = xstrdup("cannot lock the database to migrate its schema");
        return STORE_EIO;
    }
    if (s->be->exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "  version BIGINT NOT NULL PRIMARY KEY,"
                       "  name TEXT NOT NULL,"
                       "  applied_at BIGINT NOT NULL"
                       ");") < 0 ||
        schema_version(s, &current) < 0) {
        *err = xstrdup("cannot read the database schema version");
        goto fail;
    }
    if (current > latest) {
        *err = xasprintf("database schema version %lld is newer than this binary supports (%lld)",
                         (long long)current, (long long)latest);
        goto fail;
    }
    for (int64_t v = current + 1; v <= latest; v++) {
        const struct migration *m = &migrations[v - 1];
        struct store_arg args[] = {ARG_INT(v), ARG_TEXT(m->name), ARG_INT(time_now_ms())};
        if (s->be->exec(s, m->sql) < 0 ||
            s->be->query(s, store_query_get(STMT_MIGRATION_RECORD), args, ARRAY_LEN(args), NULL,
                         NULL, NULL) < 0) {
            *err = xasprintf("database migration %lld (%s) failed", (long long)v, m->name);
            goto fail;
        }
        log_info("store: applied schema migration %lld (%s)", (long long)v, m->name);
    }
    if (store_commit(s) < 0) {
        *err = xstrdup("cannot commit the database schema migrations");
        return STORE_EIO;
    }
    return 0;
fail:
    store_rollback(s);
    return STORE_EIO;
}
