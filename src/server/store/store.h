/* The primary's store: one interface, with SQLite as the embedded backend and room for a
 * PostgreSQL one (a second `struct store_backend`). SQL is kept portable between the two.
 *
 * Threading: a store is used by one thread at a time (the server's store thread owns it);
 * calls block. Nothing here runs on an event loop.
 *
 * Errors: functions return 0, or one of the negative STORE_E* codes. Strings in records are
 * heap copies owned by the record; *_fini frees them. Timestamps are ms since the epoch. */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    STORE_OK = 0,
    STORE_ENOTFOUND = -1, /* no such row */
    STORE_ECONFLICT = -2, /* a unique constraint was violated */
    STORE_EIO = -3,       /* the database failed; details logged */
};

struct store_user {
    char id[37];
    char *email;
    char *username;
    char *name;
    char *hashed_password; /* "$pbkdf2-sha256$..." or "" */
    char *status;          /* "active" | "dormant" | "suspended" */
    char *login_type;      /* "password" | "none" ... */
    char *rbac_roles;      /* comma-separated site roles, e.g. "owner" or "" */
    int64_t created_at;
    int64_t updated_at;
    int64_t last_seen_at;
};

struct store_apikey {
    char id[11]; /* the 10-character public part */
    char user_id[37];
    uint8_t hashed_secret[32]; /* sha256 of the 22-character secret */
    int64_t lifetime_seconds;
    int64_t expires_at;
    int64_t created_at;
    int64_t updated_at;
    int64_t last_used;
    char *login_type; /* "password" | "token" */
    char *scope;      /* "all" | "application_connect" */
    char *token_name; /* "" for session keys */
    char *ip_address;
};

struct store_proxy {
    char id[37];
    char *name;
    char *display_name;
    char *icon;
    char *url;               /* "" until the proxy registers */
    char *wildcard_hostname; /* "" when none */
    int64_t created_at;
    int64_t updated_at;
    bool deleted;
    uint8_t token_hashed_secret[32];
    int64_t region_id; /* assigned by the store, unique, increasing */
    bool derp_enabled;
    bool derp_only;
    char *version; /* "" until registered */
};

struct store_replica {
    char id[37];
    char proxy_id[37]; /* owning workspace proxy */
    char *hostname;
    char *version;
    char *relay_address;
    char *error;
    int64_t region_id;
    int64_t created_at;
    int64_t updated_at; /* last (re-)register */
    int64_t stopped_at; /* 0 while running */
};

struct store_workspace {
    char id[37];
    char owner_id[37];
    char *name;
    int64_t created_at;
    int64_t updated_at;
    int64_t last_used_at;
    bool deleted;
};

struct store_agent {
    char id[37];
    char workspace_id[37];
    char *name;
    uint8_t token_hash[32]; /* sha256 of the agent token */
    int64_t created_at;
    int64_t updated_at;
    int64_t first_connected_at; /* 0 = never */
    int64_t last_connected_at;
    int64_t disconnected_at;
    char *version;
    char *lifecycle_state;
};

struct store_app {
    char id[37];
    char agent_id[37];
    char *slug;
    char *display_name;
    char *url;
    bool subdomain;
    char *sharing_level; /* "owner" | "authenticated" | "public" */
    int64_t created_at;
};

struct store_crypto_key {
    char *feature; /* "workspace_apps_token", "workspace_apps_api_key", "agent_tunnel" */
    int64_t sequence;
    char *secret; /* hex */
    int64_t starts_at;
    int64_t deletes_at; /* 0 = not scheduled */
};

void store_user_fini(struct store_user *u);
void store_apikey_fini(struct store_apikey *k);
void store_proxy_fini(struct store_proxy *p);
void store_replica_fini(struct store_replica *r);
/* Frees an array of n records and the array itself. */
void store_proxies_free(struct store_proxy *v, size_t n);
void store_replicas_free(struct store_replica *v, size_t n);

struct store;

/* Opens (creating if needed) the SQLite database at path, in WAL mode, and runs the schema
 * migrations. Returns NULL and sets *err (caller frees) on failure. */
struct store *store_open_sqlite(const char *path, char **err);
void store_close(struct store *s);

/* Transactions: everything between begin and commit is atomic. Calls outside a transaction
 * are each atomic on their own. rollback is safe after any failure. */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

/* Site configuration, a key/value table ("deployment_id", "default_proxy_display_name", ...).
 * get returns STORE_ENOTFOUND when unset; *value is a new string. */
int store_config_get(struct store *s, const char *key, char **value);
int store_config_set(struct store *s, const char *key, const char *value);

/* Users. Username and email are unique case-insensitively (ECONFLICT). */
int store_user_insert(struct store *s, const struct store_user *u);
int store_user_count(struct store *s, int64_t *count);
int store_user_by_id(struct store *s, const char *id, struct store_user *out);
int store_user_by_email(struct store *s, const char *email, struct store_user *out);
int store_user_by_username(struct store *s, const char *username, struct store_user *out);
int store_user_touch(struct store *s, const char *id, int64_t last_seen_at);

/* API keys. */
int store_apikey_insert(struct store *s, const struct store_apikey *k);
int store_apikey_by_id(struct store *s, const char *id, struct store_apikey *out);
int store_apikey_update_usage(struct store *s, const char *id, int64_t last_used,
                              int64_t expires_at);
int store_apikey_delete(struct store *s, const char *id);

/* Workspace proxies. Names are unique among non-deleted proxies, case-insensitively
 * (ECONFLICT). insert assigns region_id (written back into *p). */
int store_proxy_insert(struct store *s, struct store_proxy *p);
/* Finds a proxy by id; deleted ones too (check ->deleted). */
int store_proxy_by_id(struct store *s, const char *id, struct store_proxy *out);
/* Finds a non-deleted proxy by name, case-insensitively. */
int store_proxy_by_name(struct store *s, const char *name, struct store_proxy *out);
/* Lists proxies ordered by created_at then name; deleted ones only if include_deleted. */
int store_proxy_list(struct store *s, bool include_deleted, struct store_proxy **out, size_t *n);
/* Updates name, display_name, icon and updated_at (and the token hash when new_hash != NULL). */
int store_proxy_update(struct store *s, const char *id, const char *name, const char *display_name,
                       const char *icon, const uint8_t *new_hash, int64_t updated_at);
/* Records what the proxy said at register: url, wildcard, derp flags, version. */
int store_proxy_register(struct store *s, const char *id, const char *url,
                         const char *wildcard_hostname, bool derp_enabled, bool derp_only,
                         const char *version, int64_t updated_at);
/* Soft delete: deleted = true; the name becomes free again. */
int store_proxy_delete(struct store *s, const char *id, int64_t updated_at);

/* Replicas of workspace proxies (one row per running proxy process). */
int store_replica_upsert(struct store *s, const struct store_replica *r);
int store_replica_by_id(struct store *s, const char *id, struct store_replica *out);
/* Replicas of one proxy that are not stopped, ordered by created_at. */
int store_replica_list(struct store *s, const char *proxy_id, struct store_replica **out,
                       size_t *n);
int store_replica_stop(struct store *s, const char *id, int64_t stopped_at);

/* Workspaces with their agent and apps. create inserts all of them atomically (ECONFLICT for
 * a name the owner already uses among live workspaces, a duplicate slug, or a token hash
 * collision); inside a caller's transaction it joins it. */
void store_workspace_fini(struct store_workspace *w);
void store_agent_fini(struct store_agent *a);
void store_app_fini(struct store_app *a);
void store_workspaces_free(struct store_workspace *v, size_t n);
void store_agents_free(struct store_agent *v, size_t n);
void store_apps_free(struct store_app *v, size_t n);
int store_workspace_create(struct store *s, const struct store_workspace *w,
                           const struct store_agent *agent, const struct store_app *apps,
                           size_t napps);
/* By id, deleted ones too (check ->deleted). */
int store_workspace_by_id(struct store *s, const char *id, struct store_workspace *out);
/* A live workspace of owner_id by name, case-insensitively. */
int store_workspace_by_owner_name(struct store *s, const char *owner_id, const char *name,
                                  struct store_workspace *out);
/* Which live workspaces store_workspace_list returns. */
struct store_workspace_filter {
    const char *owner_id; /* NULL or "": everyone's */
    const char *name;     /* NULL or "": any; else a case-insensitive substring of the name */
    int64_t offset;       /* rows to skip */
    int64_t limit;        /* at most this many; 0 = no limit */
};
/* Live workspaces matching flt, ordered by owner username then name (case-insensitively);
 * *total is how many match before offset and limit. The caller frees *out with
 * store_workspaces_free. */
int store_workspace_list(struct store *s, const struct store_workspace_filter *flt,
                         struct store_workspace **out, size_t *n, int64_t *total);
/* Soft delete: ENOTFOUND when already deleted or unknown. */
int store_workspace_delete(struct store *s, const char *id, int64_t updated_at);
/* Moves last_used_at forward (never back). */
int store_workspace_touch(struct store *s, const char *id, int64_t last_used_at);
int store_agent_by_id(struct store *s, const char *id, struct store_agent *out);
/* The agent whose token hashes to hash, if its workspace is live. */
int store_agent_by_token_hash(struct store *s, const uint8_t hash[32], struct store_agent *out);
int store_agent_list(struct store *s, const char *workspace_id, struct store_agent **out,
                     size_t *n);
/* Records a tunnel coming up (connected_at = now, disconnected_at = 0) or going down
 * (connected_at = 0, disconnected_at = now). first_connected_at is set once. */
int store_agent_set_connection(struct store *s, const char *id, int64_t connected_at,
                               int64_t disconnected_at, int64_t updated_at);
/* Marks every agent shown connected as disconnected at now: a starting primary holds no tunnels
 * (one primary replica; with several, each would record only its own). */
int store_agents_disconnect_all(struct store *s, int64_t now);
int store_app_list(struct store *s, const char *agent_id, struct store_app **out, size_t *n);

/* Crypto keys: insert assigns the next sequence of the feature (written to *sequence). list
 * returns the feature's keys not deleted at now, oldest first. */
void store_crypto_key_fini(struct store_crypto_key *k);
void store_crypto_keys_free(struct store_crypto_key *v, size_t n);
int store_crypto_key_insert(struct store *s, const char *feature, const char *secret_hex,
                            int64_t starts_at, int64_t *sequence);
/* Schedules the deletion of the feature's keys older than before_sequence (those not yet
 * scheduled). */
int store_crypto_key_retire(struct store *s, const char *feature, int64_t before_sequence,
                            int64_t deletes_at);
int store_crypto_key_list(struct store *s, const char *feature, int64_t now,
                          struct store_crypto_key **out, size_t *n);

/* App usage from a region (CODER-COMPAT §2.8): one row per app session, times in ms. */
struct store_app_stat {
    const char *user_id, *workspace_id, *agent_id;
    const char *access_method; /* "path" | "subdomain" | "terminal" */
    const char *slug_or_port;
    const char *session_id;
    int64_t started_at, ended_at;
    int64_t requests;
};
/* Stores the reports in one transaction (a session reported again keeps the later end and the
 * larger count) and moves each workspace's last_used_at forward to the session's end. */
int store_app_stats_report(struct store *s, const struct store_app_stat *v, size_t n);

#endif
