/* The primary's store on SQLite: schema and migrations, every record type, transactions, and
 * durability across a killed process. Each test gets a fresh database in its own temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/util.h"
#include "base/uuid.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    char *path;
};

static int
setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    f->path = xasprintf("%s/coder.db", f->dir);
    *state = f;
    return 0;
}

static void
remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        if (unlink(p) < 0 && errno == EISDIR)
            remove_tree(p);
        free(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    remove_tree(f->dir);
    free(f->path);
    free(f);
    return 0;
}

static struct store *
open_ok(const struct fixture *f)
{
    char *err = NULL;
    struct store *s = store_open_sqlite(f->path, &err);
    if (s == NULL)
        fail_msg("store_open_sqlite: %s", err ? err : "(no message)");
    assert_null(err);
    return s;
}

/* Runs one SQL statement on the file directly, outside the store, returning the first column
 * of the first row as an integer (or -1 when there is no row). */
static int64_t
raw_sql(const struct fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void
user_make(struct store_user *u, const char *email, const char *username)
{
    memset(u, 0, sizeof(*u));
    uuid_new(u->id);
    u->email = xstrdup(email);
    u->username = xstrdup(username);
    u->name = xstrdup("Some Name");
    u->hashed_password = xstrdup("$pbkdf2-sha256$65535$c2FsdA$a2V5");
    u->status = xstrdup("active");
    u->login_type = xstrdup("password");
    u->rbac_roles = xstrdup("owner");
    u->created_at = 1700000000000;
    u->updated_at = 1700000000001;
    u->last_seen_at = 1700000000002;
}

static void
apikey_make(struct store_apikey *k, const char *user_id, const char *id)
{
    memset(k, 0, sizeof(*k));
    snprintf(k->id, sizeof(k->id), "%s", id);
    snprintf(k->user_id, sizeof(k->user_id), "%s", user_id);
    for (size_t i = 0; i < sizeof(k->hashed_secret); i++)
        k->hashed_secret[i] = (uint8_t)(i * 7 + 1);
    k->lifetime_seconds = 86400;
    k->expires_at = 1800000000000;
    k->created_at = 1700000000000;
    k->updated_at = 1700000000000;
    k->last_used = 1700000000500;
    k->login_type = xstrdup("password");
    k->scope = xstrdup("all");
    k->token_name = xstrdup("");
    k->ip_address = xstrdup("127.0.0.1");
}

static void
proxy_make(struct store_proxy *p, const char *name, int64_t created_at)
{
    memset(p, 0, sizeof(*p));
    uuid_new(p->id);
    p->name = xstrdup(name);
    p->display_name = xstrdup("Display");
    p->icon = xstrdup("/emojis/1f3f3.png");
    p->url = xstrdup("");
    p->wildcard_hostname = xstrdup("");
    p->created_at = p->updated_at = created_at;
    rand_bytes(p->token_hashed_secret, sizeof(p->token_hashed_secret));
    p->derp_enabled = true;
    p->version = xstrdup("");
}

static void
replica_make(struct store_replica *r, const char *proxy_id, const char *hostname,
             int64_t created_at)
{
    memset(r, 0, sizeof(*r));
    uuid_new(r->id);
    snprintf(r->proxy_id, sizeof(r->proxy_id), "%s", proxy_id);
    r->hostname = xstrdup(hostname);
    r->version = xstrdup("v2.18.0");
    r->relay_address = xstrdup("https://relay.example.com");
    r->error = xstrdup("");
    r->region_id = 10001;
    r->created_at = r->updated_at = created_at;
}

/* ---- workspaces -------------------------------------------------------------------------- */

static void
workspace_make(struct store_workspace *w, struct store_agent *a, const char *owner_id,
               const char *name, uint8_t token_byte)
{
    memset(w, 0, sizeof(*w));
    memset(a, 0, sizeof(*a));
    uuid_new(w->id);
    snprintf(w->owner_id, sizeof(w->owner_id), "%s", owner_id);
    w->name = xstrdup(name);
    w->created_at = w->updated_at = 1700000000000;
    uuid_new(a->id);
    a->name = xstrdup("main");
    memset(a->token_hash, token_byte, sizeof(a->token_hash));
    a->created_at = a->updated_at = 1700000000000;
}

static void
app_make(struct store_app *a, const char *slug, bool subdomain, const char *share)
{
    memset(a, 0, sizeof(*a));
    uuid_new(a->id);
    a->slug = xstrdup(slug);
    a->display_name = xstrdup(slug);
    a->url = xstrdup("http://127.0.0.1:8080");
    a->subdomain = subdomain;
    a->sharing_level = xstrdup(share);
    a->created_at = 1700000000000;
}

static void
test_workspaces(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user u;
    user_make(&u, "dev@example.com", "dev");
    assert_int_equal(store_user_insert(s, &u), 0);

    struct store_workspace w;
    struct store_agent a;
    struct store_app apps[2];
    workspace_make(&w, &a, u.id, "Dev-Box", 0x11);
    app_make(&apps[0], "code", false, "owner");
    app_make(&apps[1], "web", true, "public");
    assert_int_equal(store_workspace_create(s, &w, &a, apps, 2), 0);

    /* Found by id and by name (case-insensitively), with its agent and apps. */
    struct store_workspace got;
    assert_int_equal(store_workspace_by_owner_name(s, u.id, "dev-box", &got), 0);
    assert_string_equal(got.id, w.id);
    assert_string_equal(got.name, "Dev-Box");
    store_workspace_fini(&got);
    struct store_agent *agents;
    size_t n;
    assert_int_equal(store_agent_list(s, w.id, &agents, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(agents[0].name, "main");
    assert_memory_equal(agents[0].token_hash, a.token_hash, 32);
    assert_string_equal(agents[0].lifecycle_state, "created");
    store_agents_free(agents, n);
    struct store_app *gotapps;
    assert_int_equal(store_app_list(s, a.id, &gotapps, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(gotapps[1].slug, "web");
    assert_true(gotapps[1].subdomain);
    assert_string_equal(gotapps[1].sharing_level, "public");
    store_apps_free(gotapps, n);

    /* The token authenticates; another does not. */
    struct store_agent by;
    assert_int_equal(store_agent_by_token_hash(s, a.token_hash, &by), 0);
    assert_string_equal(by.id, a.id);
    store_agent_fini(&by);
    uint8_t other[32];
    memset(other, 0x22, sizeof(other));
    assert_int_equal(store_agent_by_token_hash(s, other, &by), STORE_ENOTFOUND);

    /* Connection bookkeeping: first_connected_at is set once. */
    assert_int_equal(store_agent_set_connection(s, a.id, 1000, 0, 1000), 0);
    assert_int_equal(store_agent_set_connection(s, a.id, 0, 2000, 2000), 0);
    assert_int_equal(store_agent_set_connection(s, a.id, 3000, 0, 3000), 0);
    assert_int_equal(store_agent_by_id(s, a.id, &by), 0);
    assert_int_equal(by.first_connected_at, 1000);
    assert_int_equal(by.last_connected_at, 3000);
    assert_int_equal(by.disconnected_at, 0);
    store_agent_fini(&by);

    /* A second workspace with the same name (any case) conflicts and leaves nothing behind. */
    struct store_workspace w2;
    struct store_agent a2;
    workspace_make(&w2, &a2, u.id, "DEV-BOX", 0x33);
    assert_int_equal(store_workspace_create(s, &w2, &a2, NULL, 0), STORE_ECONFLICT);
    assert_int_equal(store_agent_by_token_hash(s, a2.token_hash, &by), STORE_ENOTFOUND);
    /* A duplicate slug fails the whole creation too. */
    struct store_app dup[2];
    app_make(&dup[0], "same", false, "owner");
    app_make(&dup[1], "same", false, "owner");
    free(w2.name);
    w2.name = xstrdup("other");
    assert_int_equal(store_workspace_create(s, &w2, &a2, dup, 2), STORE_ECONFLICT);
    assert_int_equal(store_workspace_by_owner_name(s, u.id, "other", &got), STORE_ENOTFOUND);
    struct store_workspace *list;
    int64_t total;
    assert_int_equal(store_workspace_list(s, &(struct store_workspace_filter){.owner_id = u.id},
                                          &list, &n, &total),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(total, 1);
    store_workspaces_free(list, n);

    /* last_used_at only moves forward. */
    assert_int_equal(store_workspace_touch(s, w.id, 5000), 0);
    assert_int_equal(store_workspace_touch(s, w.id, 4000), 0);
    assert_int_equal(store_workspace_by_id(s, w.id, &got), 0);
    assert_int_equal(got.last_used_at, 5000);
    store_workspace_fini(&got);

    /* Deleting frees the name and revokes the agent token; deleting twice is ENOTFOUND. */
    assert_int_equal(store_workspace_delete(s, w.id, 6000), 0);
    assert_int_equal(store_workspace_delete(s, w.id, 6001), STORE_ENOTFOUND);
    assert_int_equal(store_agent_by_token_hash(s, a.token_hash, &by), STORE_ENOTFOUND);
    assert_int_equal(store_workspace_by_id(s, w.id, &got), 0);
    assert_true(got.deleted);
    store_workspace_fini(&got);
    free(w2.name);
    w2.name = xstrdup("dev-box");
    assert_int_equal(store_workspace_create(s, &w2, &a2, NULL, 0), 0);
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){0}, &list, &n, &total), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, w2.id);
    store_workspaces_free(list, n);

    for (int i = 0; i < 2; i++) {
        store_app_fini(&apps[i]);
        store_app_fini(&dup[i]);
    }
    store_workspace_fini(&w);
    store_workspace_fini(&w2);
    store_agent_fini(&a);
    store_agent_fini(&a2);
    store_user_fini(&u);
    store_close(s);
}

/* Listing: by owner, by a name substring (LIKE's own characters match only themselves), in
 * pages with the total before paging; deleted workspaces never show. */
static void
test_workspace_list_filters(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user alice, bob;
    user_make(&alice, "alice@example.com", "alice");
    user_make(&bob, "bob@example.com", "Bob");
    assert_int_equal(store_user_insert(s, &alice), 0);
    assert_int_equal(store_user_insert(s, &bob), 0);
    const char *names[] = {"web-2", "Web-1", "db", "a_b", "axb"};
    struct store_workspace w[6];
    struct store_agent a[6];
    for (int i = 0; i < 5; i++) {
        workspace_make(&w[i], &a[i], alice.id, names[i], (uint8_t)(0x40 + i));
        assert_int_equal(store_workspace_create(s, &w[i], &a[i], NULL, 0), 0);
    }
    workspace_make(&w[5], &a[5], bob.id, "web-3", 0x50);
    assert_int_equal(store_workspace_create(s, &w[5], &a[5], NULL, 0), 0);
    assert_int_equal(store_workspace_delete(s, w[2].id, 2000), 0); /* db */

    struct store_workspace *list;
    size_t n;
    int64_t total;
    /* Everyone's, ordered by owner then name, case-insensitively. */
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){0}, &list, &n, &total), 0);
    assert_int_equal(n, 5);
    assert_int_equal(total, 5);
    const char *want[] = {"a_b", "axb", "Web-1", "web-2", "web-3"};
    for (size_t i = 0; i < n; i++)
        assert_string_equal(list[i].name, want[i]);
    store_workspaces_free(list, n);

    /* A name substring, any case, and one owner. */
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){.name = "WEB"}, &list, &n, &total),
        0);
    assert_int_equal(total, 3);
    store_workspaces_free(list, n);
    assert_int_equal(store_workspace_list(
                         s, &(struct store_workspace_filter){.owner_id = alice.id, .name = "web"},
                         &list, &n, &total),
                     0);
    assert_int_equal(n, 2);
    store_workspaces_free(list, n);
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){.name = "_"}, &list, &n, &total),
        0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].name, "a_b");
    store_workspaces_free(list, n);
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){.name = "%"}, &list, &n, &total),
        0);
    assert_int_equal(n, 0);
    assert_int_equal(total, 0);
    store_workspaces_free(list, n);

    /* Pages: the total counts every match. */
    assert_int_equal(store_workspace_list(s,
                                          &(struct store_workspace_filter){.offset = 1, .limit = 2},
                                          &list, &n, &total),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(total, 5);
    assert_string_equal(list[0].name, "axb");
    assert_string_equal(list[1].name, "Web-1");
    store_workspaces_free(list, n);
    assert_int_equal(
        store_workspace_list(s, &(struct store_workspace_filter){.offset = 9}, &list, &n, &total),
        0);
    assert_int_equal(n, 0);
    assert_int_equal(total, 5);
    store_workspaces_free(list, n);

    for (int i = 0; i < 6; i++) {
        store_workspace_fini(&w[i]);
        store_agent_fini(&a[i]);
    }
    store_user_fini(&alice);
    store_user_fini(&bob);
    store_close(s);
}

/* ---- schema ------------------------------------------------------------------------------ */

static void
test_open_creates_schema(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    store_close(s);

    /* The file is private (it holds hashes) and in WAL mode, which persists in the file. */
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);

    const char *tables[] = {"schema_migrations", "site_configs",      "users",
                            "api_keys",          "workspace_proxies", "replicas",
                            "workspaces",        "workspace_agents",  "workspace_apps"};
    for (size_t i = 0; i < ARRAY_LEN(tables); i++) {
        char *sql = xasprintf(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'", tables[i]);
        assert_int_equal(raw_sql(f, sql), 1);
        free(sql);
    }
    assert_true(raw_sql(f, "SELECT MAX(version) FROM schema_migrations") >= 1);
}

static void
test_open_does_not_create_directories(void **state)
{
    struct fixture *f = *state;
    char *path = xasprintf("%s/missing/coder.db", f->dir);
    char *dir = xasprintf("%s/missing", f->dir);
    char *err = NULL;
    assert_null(store_open_sqlite(path, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, path));
    struct stat st;
    assert_int_equal(stat(dir, &st), -1);
    free(err);
    free(path);
    free(dir);

    err = NULL;
    assert_null(store_open_sqlite("", &err));
    assert_non_null(err);
    free(err);
}

static void
test_open_rejects_non_database(void **state)
{
    struct fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("this is not an SQLite database, it is a text file long enough to have a header\n", fp);
    fclose(fp);
    char *err = NULL;
    assert_null(store_open_sqlite(f->path, &err));
    assert_non_null(err);
    free(err);
}

static void
test_reopen_keeps_rows(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user u;
    struct store_apikey k;
    struct store_proxy p;
    struct store_replica r;
    user_make(&u, "admin@example.com", "admin");
    apikey_make(&k, u.id, "abcdefghij");
    proxy_make(&p, "sydney", 1000);
    assert_int_equal(store_config_set(s, "deployment_id", "dep-1"), 0);
    assert_int_equal(store_user_insert(s, &u), 0);
    assert_int_equal(store_apikey_insert(s, &k), 0);
    assert_int_equal(store_proxy_insert(s, &p), 0);
    replica_make(&r, p.id, "host-a", 2000);
    assert_int_equal(store_replica_upsert(s, &r), 0);
    int64_t versions = raw_sql(f, "SELECT COUNT(*) FROM schema_migrations");
    store_close(s);

    s = open_ok(f);
    /* Reopening applies nothing twice. */
    assert_int_equal(raw_sql(f, "SELECT COUNT(*) FROM schema_migrations"), versions);
    char *v = NULL;
    assert_int_equal(store_config_get(s, "deployment_id", &v), 0);
    assert_string_equal(v, "dep-1");
    free(v);
    struct store_user u2 = {0};
    assert_int_equal(store_user_by_id(s, u.id, &u2), 0);
    assert_string_equal(u2.username, "admin");
    struct store_apikey k2 = {0};
    assert_int_equal(store_apikey_by_id(s, k.id, &k2), 0);
    assert_memory_equal(k2.hashed_secret, k.hashed_secret, 32);
    struct store_proxy p2 = {0};
    assert_int_equal(store_proxy_by_id(s, p.id, &p2), 0);
    assert_int_equal(p2.region_id, 10001);
    assert_memory_equal(p2.token_hashed_secret, p.token_hashed_secret, 32);
    struct store_replica r2 = {0};
    assert_int_equal(store_replica_by_id(s, r.id, &r2), 0);
    assert_string_equal(r2.hostname, "host-a");

    /* Region ids continue after a restart. */
    struct store_proxy p3;
    proxy_make(&p3, "london", 3000);
    assert_int_equal(store_proxy_insert(s, &p3), 0);
    assert_int_equal(p3.region_id, 10002);

    store_close(s);
    store_user_fini(&u);
    store_user_fini(&u2);
    store_apikey_fini(&k);
    store_apikey_fini(&k2);
    store_proxy_fini(&p);
    store_proxy_fini(&p2);
    store_proxy_fini(&p3);
    store_replica_fini(&r);
    store_replica_fini(&r2);
}

static void
test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    store_close(open_ok(f));
    int64_t latest = raw_sql(f, "SELECT MAX(version) FROM schema_migrations");
    char *sql = xasprintf("INSERT INTO schema_migrations (version, name, applied_at) "
                          "VALUES (%lld, 'from the future', 0)",
                          (long long)latest + 1);
    raw_sql(f, sql);
    free(sql);

    char *err = NULL;
    assert_null(store_open_sqlite(f->path, &err));
    char *want = xasprintf("database schema version %lld is newer than this binary supports (%lld)",
                           (long long)latest + 1, (long long)latest);
    assert_non_null(err);
    assert_string_equal(err, want);
    free(want);
    free(err);
    /* Refusing changed nothing. */
    assert_int_equal(raw_sql(f, "SELECT MAX(version) FROM schema_migrations"), latest + 1);
}

/* ---- site configs ------------------------------------------------------------------------ */

static void
test_config(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    char *v = (char *)"untouched";
    assert_int_equal(store_config_get(s, "default_proxy_display_name", &v), STORE_ENOTFOUND);
    assert_null(v);
    assert_int_equal(store_config_set(s, "default_proxy_display_name", "Default"), 0);
    assert_int_equal(store_config_set(s, "default_proxy_display_name", "Home"), 0);
    assert_int_equal(store_config_set(s, "empty", ""), 0);
    assert_int_equal(store_config_get(s, "default_proxy_display_name", &v), 0);
    assert_string_equal(v, "Home");
    free(v);
    assert_int_equal(store_config_get(s, "empty", &v), 0);
    assert_string_equal(v, "");
    free(v);
    store_close(s);
}

/* ---- users ------------------------------------------------------------------------------- */

static void
test_users(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user u, got = {0};
    int64_t n = -1;
    assert_int_equal(store_user_count(s, &n), 0);
    assert_int_equal(n, 0);
    user_make(&u, "Admin@Example.com", "Admin");
    assert_int_equal(store_user_insert(s, &u), 0);
    assert_int_equal(store_user_count(s, &n), 0);
    assert_int_equal(n, 1);

    assert_int_equal(store_user_by_id(s, u.id, &got), 0);
    assert_string_equal(got.id, u.id);
    assert_string_equal(got.email, "Admin@Example.com");
    assert_string_equal(got.username, "Admin");
    assert_string_equal(got.name, "Some Name");
    assert_string_equal(got.hashed_password, u.hashed_password);
    assert_string_equal(got.status, "active");
    assert_string_equal(got.login_type, "password");
    assert_string_equal(got.rbac_roles, "owner");
    assert_int_equal(got.created_at, u.created_at);
    assert_int_equal(got.updated_at, u.updated_at);
    assert_int_equal(got.last_seen_at, u.last_seen_at);
    store_user_fini(&got);

    assert_int_equal(store_user_by_email(s, "admin@EXAMPLE.COM", &got), 0);
    assert_string_equal(got.id, u.id);
    store_user_fini(&got);
    assert_int_equal(store_user_by_username(s, "aDMIN", &got), 0);
    assert_string_equal(got.id, u.id);
    store_user_fini(&got);

    assert_int_equal(store_user_by_id(s, "00000000-0000-0000-0000-000000000000", &got),
                     STORE_ENOTFOUND);
    assert_null(got.email); /* left zeroed: fini is safe, nothing to free */
    store_user_fini(&got);
    assert_int_equal(store_user_by_email(s, "nobody@example.com", &got), STORE_ENOTFOUND);
    assert_int_equal(store_user_by_username(s, "nobody", &got), STORE_ENOTFOUND);
    /* A LIKE-style pattern is just a string. */
    assert_int_equal(store_user_by_username(s, "%", &got), STORE_ENOTFOUND);

    /* Same email or username in another case is taken; so is the same id. */
    struct store_user dup;
    user_make(&dup, "ADMIN@example.COM", "other");
    assert_int_equal(store_user_insert(s, &dup), STORE_ECONFLICT);
    store_user_fini(&dup);
    user_make(&dup, "other@example.com", "aDmIn");
    assert_int_equal(store_user_insert(s, &dup), STORE_ECONFLICT);
    store_user_fini(&dup);
    user_make(&dup, "other@example.com", "other");
    snprintf(dup.id, sizeof(dup.id), "%s", u.id);
    assert_int_equal(store_user_insert(s, &dup), STORE_ECONFLICT);
    store_user_fini(&dup);
    assert_int_equal(store_user_count(s, &n), 0);
    assert_int_equal(n, 1);

    /* NULL strings are stored and come back as "". */
    user_make(&dup, "member@example.com", "member");
    free(dup.name);
    free(dup.hashed_password);
    dup.name = dup.hashed_password = NULL;
    assert_int_equal(store_user_insert(s, &dup), 0);
    assert_int_equal(store_user_by_username(s, "member", &got), 0);
    assert_string_equal(got.name, "");
    assert_string_equal(got.hashed_password, "");
    store_user_fini(&got);
    store_user_fini(&dup);

    assert_int_equal(store_user_touch(s, u.id, 1800000000000), 0);
    assert_int_equal(store_user_by_id(s, u.id, &got), 0);
    assert_int_equal(got.last_seen_at, 1800000000000);
    store_user_fini(&got);
    assert_int_equal(store_user_touch(s, "00000000-0000-0000-0000-000000000000", 1),
                     STORE_ENOTFOUND);

    store_user_fini(&u);
    store_close(s);
}

/* ---- API keys ---------------------------------------------------------------------------- */

static void
test_apikeys(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user u;
    struct store_apikey k, got = {0};
    user_make(&u, "a@example.com", "a");
    assert_int_equal(store_user_insert(s, &u), 0);
    apikey_make(&k, u.id, "0123456789");
    assert_int_equal(store_apikey_insert(s, &k), 0);
    assert_int_equal(store_apikey_insert(s, &k), STORE_ECONFLICT);

    assert_int_equal(store_apikey_by_id(s, "0123456789", &got), 0);
    assert_string_equal(got.id, "0123456789");
    assert_string_equal(got.user_id, u.id);
    assert_memory_equal(got.hashed_secret, k.hashed_secret, 32);
    assert_int_equal(got.lifetime_seconds, 86400);
    assert_int_equal(got.expires_at, k.expires_at);
    assert_int_equal(got.created_at, k.created_at);
    assert_int_equal(got.updated_at, k.updated_at);
    assert_int_equal(got.last_used, k.last_used);
    assert_string_equal(got.login_type, "password");
    assert_string_equal(got.scope, "all");
    assert_string_equal(got.token_name, "");
    assert_string_equal(got.ip_address, "127.0.0.1");
    store_apikey_fini(&got);

    assert_int_equal(store_apikey_update_usage(s, k.id, 1750000000000, 1850000000000), 0);
    assert_int_equal(store_apikey_by_id(s, k.id, &got), 0);
    assert_int_equal(got.last_used, 1750000000000);
    assert_int_equal(got.expires_at, 1850000000000);
    store_apikey_fini(&got);
    assert_int_equal(store_apikey_update_usage(s, "zzzzzzzzzz", 1, 2), STORE_ENOTFOUND);

    assert_int_equal(store_apikey_delete(s, k.id), 0);
    assert_int_equal(store_apikey_by_id(s, k.id, &got), STORE_ENOTFOUND);
    assert_int_equal(store_apikey_delete(s, k.id), STORE_ENOTFOUND);

    /* Foreign keys are enforced: a key for a user that does not exist is refused. */
    struct store_apikey orphan;
    apikey_make(&orphan, "00000000-0000-0000-0000-000000000000", "orphan0000");
    assert_int_equal(store_apikey_insert(s, &orphan), STORE_EIO);
    assert_int_equal(store_apikey_by_id(s, orphan.id, &got), STORE_ENOTFOUND);
    store_apikey_fini(&orphan);

    store_apikey_fini(&k);
    store_user_fini(&u);
    store_close(s);
}

/* A damaged hash is an error, and the log names neither it nor anything secret. */
static void
test_apikey_corrupt_hash_not_logged(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_user u;
    struct store_apikey k, got = {0};
    user_make(&u, "a@example.com", "a");
    apikey_make(&k, u.id, "0123456789");
    assert_int_equal(store_user_insert(s, &u), 0);
    assert_int_equal(store_apikey_insert(s, &k), 0);
    char hex[65];
    hex_encode(k.hashed_secret, 32, hex);
    char *sql = xasprintf("UPDATE api_keys SET hashed_secret = 'xx%s' WHERE id = '%s'", hex, k.id);
    raw_sql(f, sql);
    free(sql);

    /* Capture stderr, where log lines go, around the failing lookup. */
    char *logpath = xasprintf("%s/log.txt", f->dir);
    int saved = dup(2), fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    log_setup(LOG_DEBUG, "");
    dup2(fd, 2);
    int rc = store_apikey_by_id(s, k.id, &got);
    dup2(saved, 2);
    close(saved);
    close(fd);
    log_setup(LOG_WARN, "");
    assert_int_equal(rc, STORE_EIO);
    assert_null(got.login_type);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(file_read_all(logpath, 1 << 20, &text, &len), 0);
    assert_non_null(strstr(text, "api_keys"));
    assert_null(strstr(text, hex));
    assert_null(strstr(text, "xx"));
    free(text);
    free(logpath);

    store_apikey_fini(&k);
    store_user_fini(&u);
    store_close(s);
}

/* ---- workspace proxies ------------------------------------------------------------------- */

static void
test_proxies(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_proxy a, b, c, got = {0};
    proxy_make(&a, "sydney", 1000);
    proxy_make(&b, "london", 2000);
    proxy_make(&c, "Sydney", 3000);
    assert_int_equal(store_proxy_insert(s, &a), 0);
    assert_int_equal(a.region_id, 10001);
    assert_int_equal(store_proxy_insert(s, &b), 0);
    assert_int_equal(b.region_id, 10002);
    /* Same name in another case is taken. */
    assert_int_equal(store_proxy_insert(s, &c), STORE_ECONFLICT);

    assert_int_equal(store_proxy_by_name(s, "SYDNEY", &got), 0);
    assert_string_equal(got.id, a.id);
    assert_string_equal(got.name, "sydney");
    assert_string_equal(got.display_name, "Display");
    assert_string_equal(got.icon, "/emojis/1f3f3.png");
    assert_string_equal(got.url, "");
    assert_string_equal(got.wildcard_hostname, "");
    assert_string_equal(got.version, "");
    assert_int_equal(got.created_at, 1000);
    assert_false(got.deleted);
    assert_true(got.derp_enabled);
    assert_false(got.derp_only);
    assert_int_equal(got.region_id, 10001);
    assert_memory_equal(got.token_hashed_secret, a.token_hashed_secret, 32);
    store_proxy_fini(&got);

    /* Soft delete: gone by name and from the live list, still there by id, name free again,
     * and its region id is not handed out again. */
    assert_int_equal(store_proxy_delete(s, a.id, 5000), 0);
    assert_int_equal(store_proxy_delete(s, a.id, 5001), STORE_ENOTFOUND);
    assert_int_equal(store_proxy_by_name(s, "sydney", &got), STORE_ENOTFOUND);
    assert_int_equal(store_proxy_by_id(s, a.id, &got), 0);
    assert_true(got.deleted);
    assert_int_equal(got.updated_at, 5000);
    store_proxy_fini(&got);
    assert_int_equal(store_proxy_insert(s, &c), 0);
    assert_int_equal(c.region_id, 10003);
    assert_int_equal(store_proxy_by_name(s, "sydney", &got), 0);
    assert_string_equal(got.id, c.id);
    store_proxy_fini(&got);

    struct store_proxy *v = NULL;
    size_t n = 0;
    assert_int_equal(store_proxy_list(s, false, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "london");
    assert_string_equal(v[1].name, "Sydney");
    store_proxies_free(v, n);
    assert_int_equal(store_proxy_list(s, true, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].id, a.id);
    assert_true(v[0].deleted);
    assert_string_equal(v[1].id, b.id);
    assert_string_equal(v[2].id, c.id);
    store_proxies_free(v, n);

    /* Update without a new hash keeps the old one; with one replaces it. */
    assert_int_equal(store_proxy_update(s, b.id, "paris", "Paris", "/icon.svg", NULL, 6000), 0);
    assert_int_equal(store_proxy_by_id(s, b.id, &got), 0);
    assert_string_equal(got.name, "paris");
    assert_string_equal(got.display_name, "Paris");
    assert_string_equal(got.icon, "/icon.svg");
    assert_int_equal(got.updated_at, 6000);
    assert_memory_equal(got.token_hashed_secret, b.token_hashed_secret, 32);
    store_proxy_fini(&got);
    uint8_t h[32];
    memset(h, 0xab, sizeof(h));
    assert_int_equal(store_proxy_update(s, b.id, "paris", "Paris", "", h, 7000), 0);
    assert_int_equal(store_proxy_by_id(s, b.id, &got), 0);
    assert_memory_equal(got.token_hashed_secret, h, 32);
    assert_string_equal(got.icon, "");
    store_proxy_fini(&got);
    /* Renaming onto a live name conflicts; onto a deleted one's does not matter (a is gone). */
    assert_int_equal(store_proxy_update(s, b.id, "SYDNEY", "x", "", NULL, 8000), STORE_ECONFLICT);
    assert_int_equal(
        store_proxy_update(s, "00000000-0000-0000-0000-000000000000", "x", "x", "", NULL, 8000),
        STORE_ENOTFOUND);
    assert_int_equal(store_proxy_update(s, a.id, "x", "x", "", NULL, 8000), STORE_ENOTFOUND);

    assert_int_equal(store_proxy_register(s, b.id, "https://paris.example.com",
                                          "*.paris.example.com", true, true, "v2.18.0", 9000),
                     0);
    assert_int_equal(store_proxy_by_id(s, b.id, &got), 0);
    assert_string_equal(got.url, "https://paris.example.com");
    assert_string_equal(got.wildcard_hostname, "*.paris.example.com");
    assert_true(got.derp_enabled);
    assert_true(got.derp_only);
    assert_string_equal(got.version, "v2.18.0");
    assert_int_equal(got.updated_at, 9000);
    assert_int_equal(got.region_id, 10002);
    store_proxy_fini(&got);
    assert_int_equal(store_proxy_register(s, b.id, "https://paris.example.com", "", false, false,
                                          "v2.18.1", 9500),
                     0);
    assert_int_equal(store_proxy_by_id(s, b.id, &got), 0);
    assert_false(got.derp_enabled);
    assert_false(got.derp_only);
    assert_string_equal(got.wildcard_hostname, "");
    store_proxy_fini(&got);
    assert_int_equal(store_proxy_register(s, a.id, "https://x", "", true, false, "v", 1),
                     STORE_ENOTFOUND);

    assert_int_equal(store_proxy_by_id(s, "not-a-uuid", &got), STORE_ENOTFOUND);
    store_proxy_fini(&a);
    store_proxy_fini(&b);
    store_proxy_fini(&c);
    store_close(s);
}

/* ---- replicas ---------------------------------------------------------------------------- */

static void
test_replicas(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    struct store_proxy p, q;
    proxy_make(&p, "sydney", 1000);
    proxy_make(&q, "london", 1000);
    assert_int_equal(store_proxy_insert(s, &p), 0);
    assert_int_equal(store_proxy_insert(s, &q), 0);

    struct store_replica r1, r2, r3, got = {0};
    replica_make(&r1, p.id, "host-1", 100);
    replica_make(&r2, p.id, "host-2", 200);
    replica_make(&r3, q.id, "host-3", 50);
    assert_int_equal(store_replica_upsert(s, &r2), 0);
    assert_int_equal(store_replica_upsert(s, &r1), 0);
    assert_int_equal(store_replica_upsert(s, &r3), 0);

    assert_int_equal(store_replica_by_id(s, r1.id, &got), 0);
    assert_string_equal(got.proxy_id, p.id);
    assert_string_equal(got.hostname, "host-1");
    assert_string_equal(got.version, "v2.18.0");
    assert_string_equal(got.relay_address, "https://relay.example.com");
    assert_string_equal(got.error, "");
    assert_int_equal(got.region_id, 10001);
    assert_int_equal(got.created_at, 100);
    assert_int_equal(got.stopped_at, 0);
    store_replica_fini(&got);

    /* Re-register: the row is updated in place and keeps its first created_at. */
    free(r1.hostname);
    free(r1.error);
    r1.hostname = xstrdup("host-1b");
    r1.error = xstrdup("cannot reach sibling");
    r1.created_at = 999;
    r1.updated_at = 300;
    assert_int_equal(store_replica_upsert(s, &r1), 0);
    assert_int_equal(store_replica_by_id(s, r1.id, &got), 0);
    assert_string_equal(got.hostname, "host-1b");
    assert_string_equal(got.error, "cannot reach sibling");
    assert_int_equal(got.created_at, 100);
    assert_int_equal(got.updated_at, 300);
    store_replica_fini(&got);

    struct store_replica *v = NULL;
    size_t n = 0;
    assert_int_equal(store_replica_list(s, p.id, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].id, r1.id); /* ordered by created_at */
    assert_string_equal(v[1].id, r2.id);
    store_replicas_free(v, n);

    assert_int_equal(store_replica_stop(s, r1.id, 400), 0);
    assert_int_equal(store_replica_by_id(s, r1.id, &got), 0);
    assert_int_equal(got.stopped_at, 400);
    store_replica_fini(&got);
    assert_int_equal(store_replica_list(s, p.id, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].id, r2.id);
    store_replicas_free(v, n);
    assert_int_equal(store_replica_stop(s, "00000000-0000-0000-0000-000000000000", 1),
                     STORE_ENOTFOUND);
    assert_int_equal(store_replica_by_id(s, "00000000-0000-0000-0000-000000000000", &got),
                     STORE_ENOTFOUND);

    /* No replicas: an empty list, not an error. */
    assert_int_equal(store_replica_list(s, "00000000-0000-0000-0000-000000000000", &v, &n), 0);
    assert_int_equal(n, 0);
    store_replicas_free(v, n);

    /* A replica must belong to a proxy that exists. */
    struct store_replica orphan;
    replica_make(&orphan, "00000000-0000-0000-0000-000000000000", "h", 1);
    assert_int_equal(store_replica_upsert(s, &orphan), STORE_EIO);
    store_replica_fini(&orphan);

    store_replica_fini(&r1);
    store_replica_fini(&r2);
    store_replica_fini(&r3);
    store_proxy_fini(&p);
    store_proxy_fini(&q);
    store_close(s);
}

/* ---- transactions ------------------------------------------------------------------------ */

static void
test_transactions(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f);
    char *v = NULL;

    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_config_set(s, "a", "1"), 0);
    store_rollback(s);
    assert_int_equal(store_config_get(s, "a", &v), STORE_ENOTFOUND);

    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_config_set(s, "b", "2"), 0);
    /* Nesting is refused and leaves the outer transaction intact. */
    assert_int_equal(store_begin(s), STORE_EIO);
    /* A failed statement does not end the transaction. */
    struct store_proxy p1, p2;
    proxy_make(&p1, "dup", 1);
    proxy_make(&p2, "DUP", 2);
    assert_int_equal(store_proxy_insert(s, &p1), 0);
    assert_int_equal(store_proxy_insert(s, &p2), STORE_ECONFLICT);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(store_config_get(s, "b", &v), 0);
    assert_string_equal(v, "2");
    free(v);
    struct store_proxy got = {0};
    assert_int_equal(store_proxy_by_name(s, "dup", &got), 0);
    store_proxy_fini(&got);

    /* Commit without begin is an error; rollback without begin (and after commit) is safe. */
    assert_int_equal(store_commit(s), STORE_EIO);
    store_rollback(s);
    assert_int_equal(store_config_get(s, "b", &v), 0);
    free(v);

    /* A region id taken inside a rolled-back transaction is handed out again. */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_proxy_insert(s, &p2), STORE_ECONFLICT);
    free(p2.name);
    p2.name = xstrdup("other");
    assert_int_equal(store_proxy_insert(s, &p2), 0);
    assert_int_equal(p2.region_id, 10002);
    store_rollback(s);
    assert_int_equal(store_proxy_by_id(s, p2.id, &got), STORE_ENOTFOUND);
    assert_int_equal(store_proxy_insert(s, &p2), 0);
    assert_int_equal(p2.region_id, 10002);

    store_proxy_fini(&p1);
    store_proxy_fini(&p2);
    /* Closing with a transaction open rolls it back. */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_config_set(s, "c", "3"), 0);
    store_close(s);
    s = open_ok(f);
    assert_int_equal(store_config_get(s, "c", &v), STORE_ENOTFOUND);
    store_close(s);
}

/* Another connection (a second process) sees only committed rows, and is not blocked from
 * reading while a writer holds its transaction open. */
static void
test_readers_see_only_committed(void **state)
{
    struct fixture *f = *state;
    struct store *w = open_ok(f), *r = open_ok(f);
    char *v = NULL;
    assert_int_equal(store_begin(w), 0);
    assert_int_equal(store_config_set(w, "k", "v"), 0);
    assert_int_equal(store_config_get(r, "k", &v), STORE_ENOTFOUND);
    assert_int_equal(store_commit(w), 0);
    assert_int_equal(store_config_get(r, "k", &v), 0);
    assert_string_equal(v, "v");
    free(v);
    store_close(w);
    store_close(r);
}

/* ---- durability -------------------------------------------------------------------------- */

static void
child_writer(const char *path, int fd)
{
    char *err = NULL;
    struct store *s = store_open_sqlite(path, &err);
    if (s == NULL)
        _exit(2);
    for (int64_t i = 1;; i++) {
        char key[32];
        snprintf(key, sizeof(key), "row-%lld", (long long)i);
        if (store_begin(s) < 0 || store_config_set(s, key, "committed") < 0 || store_commit(s) < 0)
            _exit(3);
        if (write(fd, &i, sizeof(i)) != (ssize_t)sizeof(i))
            _exit(4);
    }
}

static void
test_durable_across_kill(void **state)
{
    struct fixture *f = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_writer(f->path, fds[1]);
        _exit(5);
    }
    close(fds[1]);
    int64_t last = 0, v;
    while (last < 300 && read(fds[0], &v, sizeof(v)) == (ssize_t)sizeof(v))
        last = v;
    kill(pid, SIGKILL);
    /* Counts written before the kill are still in the pipe. */
    while (read(fds[0], &v, sizeof(v)) == (ssize_t)sizeof(v))
        last = v;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_true(last >= 300);

    struct store *s = open_ok(f);
    for (int64_t i = 1; i <= last; i++) {
        char key[32], *val = NULL;
        snprintf(key, sizeof(key), "row-%lld", (long long)i);
        if (store_config_get(s, key, &val) != 0)
            fail_msg("committed row %lld of %lld lost", (long long)i, (long long)last);
        assert_string_equal(val, "committed");
        free(val);
    }
    store_close(s);
}

int
main(void)
{
    log_setup(LOG_WARN, "");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_does_not_create_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_rejects_non_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apikeys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apikey_corrupt_hash_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workspaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workspace_list_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_see_only_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_across_kill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
