/* Workspace proxy administration (owner), the region list (any user), and the proxy's own
 * register / deregister calls (proxy token). */
#include "apphost/apphost.h"
#include "auth.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "primary.h"
#include "proxyhealth.h"
#include "tunnel/table.h"

#include <ctype.h>
#include <string.h>

#define NOT_FOUND "Resource not found or you do not have access to this resource"
#define DEFAULT_PRIMARY_ICON "/emojis/1f3e1.png"
#define MAX_DISPLAY 64
#define MAX_ICON 256
/* Coder answers a body that does not decode into the request type, a field of the wrong type
 * included, as it answers a syntax error (httpapi.Read). */
#define BAD_JSON "Request body must be valid JSON."
#define PRIMARY_RENAME                                                                             \
    "Cannot update name of default primary proxy, did you mean to update the 'display name'?"

static json_t *
time_json(int64_t ms)
{
    char ts[40];
    time_format_rfc3339(ms, ts, sizeof(ts));
    return json_string(ts);
}

/* Coder's wildcard hostname for the primary: the pattern plus the access URL's port if the
 * pattern names none. */
static char *
primary_wildcard(const struct primary *p)
{
    const char *w = p->cfg.wildcard_access_url;
    if (w == NULL || *w == '\0')
        return xstrdup("");
    struct url u;
    if (strchr(w, ':') || url_parse(p->cfg.access_url, &u) < 0)
        return xstrdup(w);
    char *out = u.port ? xasprintf("%s:%d", w, u.port) : xstrdup(w);
    url_free(&u);
    return out;
}

static char *
config_or(struct store *st, const char *key, const char *def)
{
    char *v = NULL;
    if (store_config_get(st, key, &v) == 0 && v && *v)
        return v;
    free(v);
    return xstrdup(def);
}

static json_t *
primary_json(struct api_ctx *c, bool full)
{
    struct primary *p = c->p;
    char *display = config_or(c->st, "default_proxy_display_name", "Default");
    char *icon = config_or(c->st, "default_proxy_icon_url", DEFAULT_PRIMARY_ICON);
    char *wild = primary_wildcard(p);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s}", "id", p->deployment_id, "name",
                          "primary", "display_name", display, "icon_url", icon, "healthy", 1,
                          "path_app_url", p->cfg.access_url, "wildcard_hostname", wild);
    if (full) {
        int64_t now = time_now_ms();
        json_object_set_new(j, "derp_enabled", json_true());
        json_object_set_new(j, "derp_only", json_false());
        json_object_set_new(j, "status",
                            json_pack("{s:s, s:{s:[], s:[]}, s:o}", "status", "ok", "report",
                                      "errors", "warnings", "checked_at", time_json(now)));
        json_object_set_new(j, "created_at", time_json(now));
        json_object_set_new(j, "updated_at", time_json(now));
        json_object_set_new(j, "deleted", json_false());
        json_object_set_new(j, "version", json_string(CODER_VERSION));
    }
    free(display);
    free(icon);
    free(wild);
    return j;
}

static json_t *
proxy_json(struct api_ctx *c, const struct store_proxy *px, bool full)
{
    bool ok = false;
    json_t *status = proxyhealth_status_json(c->p->health, px, &ok);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s}", "id", px->id, "name", px->name,
                          "display_name", px->display_name, "icon_url", px->icon, "healthy", ok,
                          "path_app_url", px->url, "wildcard_hostname", px->wildcard_hostname);
    if (!full) {
        json_decref(status);
        return j;
    }
    json_object_set_new(j, "derp_enabled", json_boolean(px->derp_enabled));
    json_object_set_new(j, "derp_only", json_boolean(px->derp_only));
    json_object_set_new(j, "status", status);
    json_object_set_new(j, "created_at", time_json(px->created_at));
    json_object_set_new(j, "updated_at", time_json(px->updated_at));
    json_object_set_new(j, "deleted", json_boolean(px->deleted));
    json_object_set_new(j, "version", json_string(px->version));
    return j;
}

/* A boolean field of j: false when absent or null (as Go decodes them); sets *bad when present
 * but not a boolean. */
static bool
bool_field(json_t *j, const char *key, bool *bad)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL || json_is_null(v))
        return false;
    if (!json_is_boolean(v)) {
        *bad = true;
        return false;
    }
    return json_is_true(v);
}

static bool
icon_valid(const char *s)
{
    return *s == '\0' || (strlen(s) <= MAX_ICON && (s[0] == '/' || str_has_prefix(s, "http")));
}

/* Validates name / display_name / icon of a create or patch. Replies 400 and returns -1. */
static int
validate_fields(struct api_ctx *c, const char *name, const char *display, const char *icon)
{
    if (name && str_eq_ci(name, "primary")) {
        api_reply_error(c, 400, "The name \"primary\" is reserved for the primary region.", NULL);
        return -1;
    }
    if (name && !api_name_valid(name)) {
        json_t *j = json_pack("{s:s, s:[{s:s, s:s}]}", "message", "Validation failed.",
                              "validations", "field", "name", "detail",
                              "name must be 1-32 letters, digits and single dashes");
        api_reply_json(c, 400, j);
        return -1;
    }
    if (display && strlen(display) > MAX_DISPLAY) {
        api_reply_error(c, 400, "Validation failed.", "display_name must be at most 64 characters");
        return -1;
    }
    if (icon && !icon_valid(icon)) {
        api_reply_error(c, 400,
                        "icon must be a relative path to an emoji or a publicly hosted image URL",
                        NULL);
        return -1;
    }
    return 0;
}

void
api_proxies_create(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    bool bad = false;
    const char *name = api_str_field(j, "name", &bad);
    const char *display = api_str_field(j, "display_name", &bad);
    const char *icon = api_str_field(j, "icon", &bad);
    struct store_proxy px = {0};
    char *token = NULL;
    if (bad) {
        api_reply_error(c, 400, BAD_JSON, "name, display_name and icon must be strings");
        goto out;
    }
    if (validate_fields(c, name ? name : "", display, icon) < 0)
        goto out;
    uuid_new(px.id);
    px.name = xstrdup(name);
    px.display_name = xstrdup(display && *display ? display : name);
    px.icon = xstrdup(icon ? icon : "");
    px.url = xstrdup("");
    px.wildcard_hostname = xstrdup("");
    px.version = xstrdup("");
    px.created_at = px.updated_at = time_now_ms();
    px.derp_enabled = true;
    token = auth_proxy_token_new(px.id, px.token_hashed_secret);
    int rc = store_proxy_insert(c->st, &px);
    if (rc == STORE_ECONFLICT) {
        char *msg = xasprintf("Workspace proxy with name \"%s\" already exists.", name);
        api_reply_error(c, 409, msg, NULL);
        free(msg);
        goto out;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error creating workspace proxy.", NULL);
        goto out;
    }
    log_info("api: workspace proxy %s created by %s", px.name, c->user.username);
    api_reply_json(
        c, 201, json_pack("{s:o, s:s}", "proxy", proxy_json(c, &px, true), "proxy_token", token));
    c->health_check = true;
out:
    free(token);
    store_proxy_fini(&px);
    json_decref(j);
}

void
api_proxies_list(struct api_ctx *c)
{
    struct store_proxy *v = NULL;
    size_t n = 0;
    if (store_proxy_list(c->st, false, &v, &n) < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace proxies.", NULL);
        return;
    }
    json_t *arr = json_array();
    json_array_append_new(arr, primary_json(c, true));
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, proxy_json(c, &v[i], true));
    store_proxies_free(v, n);
    api_reply_json(c, 200, json_pack("{s:o}", "regions", arr));
}

void
api_regions(struct api_ctx *c)
{
    struct store_proxy *v = NULL;
    size_t n = 0;
    if (store_proxy_list(c->st, false, &v, &n) < 0) {
        api_reply_error(c, 500, "Internal error fetching regions.", NULL);
        return;
    }
    json_t *arr = json_array();
    json_array_append_new(arr, primary_json(c, false));
    for (size_t i = 0; i < n; i++) {
        if (!v[i].derp_only)
            json_array_append_new(arr, proxy_json(c, &v[i], false));
    }
    store_proxies_free(v, n);
    api_reply_json(c, 200, json_pack("{s:o}", "regions", arr));
}

/* Resolves {workspaceproxy}: a UUID, a name, or "primary" / the deployment id.
 * Returns 1 for the primary, 0 for a proxy (filled), -1 after replying. */
static int
resolve_proxy_param(struct api_ctx *c, struct store_proxy *out)
{
    const char *param = http_exchange_param(c->ex, "workspaceproxy");
    if (param == NULL || str_eq_ci(param, "primary") || str_eq_ci(param, c->p->deployment_id))
        return 1;
    int rc;
    if (uuid_valid(param)) {
        char id[37];
        snprintf(id, sizeof(id), "%s", param);
        rc = store_proxy_by_id(c->st, str_lower(id), out);
        if (rc == 0 && out->deleted) {
            store_proxy_fini(out);
            rc = STORE_ENOTFOUND;
        }
    } else {
        rc = store_proxy_by_name(c->st, param, out);
    }
    if (rc == STORE_ENOTFOUND) {
        api_reply_error(c, 404, NOT_FOUND, NULL);
        return -1;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace proxy.", NULL);
        return -1;
    }
    return 0;
}

void
api_proxies_get(struct api_ctx *c)
{
    struct store_proxy px = {0};
    int r = resolve_proxy_param(c, &px);
    if (r < 0)
        return;
    api_reply_json(c, 200, r == 1 ? primary_json(c, true) : proxy_json(c, &px, true));
    store_proxy_fini(&px);
}

/* The primary region has no row: its display name and icon live in site_configs (Coder's
 * default_proxy_display_name / default_proxy_icon_url) and its name is fixed. The fields are
 * checked as a proxy's are, and nothing is stored unless all of them pass. An empty field
 * keeps its value; a patch that keeps both is refused, as Coder refuses it. */
static void
patch_primary(struct api_ctx *c, const char *name, const char *display, const char *icon)
{
    if (name && *name && strcmp(name, "primary") != 0) {
        api_reply_json(c, 400,
                       json_pack("{s:s, s:[{s:s, s:s}]}", "message", PRIMARY_RENAME, "validations",
                                 "field", "name", "detail",
                                 "Cannot update name of default primary proxy"));
        return;
    }
    if (display && *display == '\0')
        display = NULL;
    if (icon && *icon == '\0')
        icon = NULL;
    if (validate_fields(c, NULL, display, icon) < 0)
        return;
    if (display == NULL && icon == NULL) {
        api_reply_json(c, 400,
                       json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "message",
                                 "No update arguments provided. Nothing to do.", "validations",
                                 "field", "display_name", "detail", "No value provided.", "field",
                                 "icon", "detail", "No value provided."));
        return;
    }
    if (store_begin(c->st) < 0 ||
        (display && store_config_set(c->st, "default_proxy_display_name", display) < 0) ||
        (icon && store_config_set(c->st, "default_proxy_icon_url", icon) < 0) ||
        store_commit(c->st) < 0) {
        store_rollback(c->st);
        api_reply_error(c, 500, "Internal error updating the primary proxy.", NULL);
        return;
    }
    api_reply_json(c, 200,
                   json_pack("{s:o, s:s}", "proxy", primary_json(c, true), "proxy_token", ""));
}

void
api_proxies_patch(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    struct store_proxy px = {0};
    char *token = NULL;
    bool bad = false;
    const char *name = api_str_field(j, "name", &bad);
    const char *display = api_str_field(j, "display_name", &bad);
    const char *icon = api_str_field(j, "icon", &bad);
    bool regen = bool_field(j, "regenerate_token", &bad);
    if (bad) {
        api_reply_error(c, 400, BAD_JSON,
                        "name, display_name and icon must be strings, regenerate_token a boolean");
        goto out;
    }
    int r = resolve_proxy_param(c, &px);
    if (r < 0)
        goto out;
    if (r == 1) {
        patch_primary(c, name, display, icon);
        goto out;
    }
    if (name && *name == '\0')
        name = NULL;
    if (display && *display == '\0')
        display = NULL;
    if (validate_fields(c, name, display, icon) < 0)
        goto out;
    uint8_t hash[32];
    if (regen)
        token = auth_proxy_token_new(px.id, hash);
    int64_t now = time_now_ms();
    int rc =
        store_proxy_update(c->st, px.id, name ? name : px.name, display ? display : px.display_name,
                           icon ? icon : px.icon, token ? hash : NULL, now);
    if (rc == STORE_ECONFLICT) {
        char *msg = xasprintf("Workspace proxy with name \"%s\" already exists.", name);
        api_reply_error(c, 409, msg, NULL);
        free(msg);
        goto out;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error updating workspace proxy.", NULL);
        goto out;
    }
    struct store_proxy updated = {0};
    if (store_proxy_by_id(c->st, px.id, &updated) < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace proxy.", NULL);
        goto out;
    }
    api_reply_json(c, 200,
                   json_pack("{s:o, s:s}", "proxy", proxy_json(c, &updated, true), "proxy_token",
                             token ? token : ""));
    store_proxy_fini(&updated);
    c->health_check = true;
out:
    free(token);
    store_proxy_fini(&px);
    json_decref(j);
}

void
api_proxies_delete(struct api_ctx *c)
{
    struct store_proxy px = {0};
    int r = resolve_proxy_param(c, &px);
    if (r < 0)
        return;
    if (r == 1) {
        api_reply_error(c, 400, "Cannot delete primary proxy", NULL);
        return;
    }
    if (store_proxy_delete(c->st, px.id, time_now_ms()) < 0) {
        api_reply_error(c, 500, "Internal error deleting workspace proxy.", NULL);
    } else {
        log_info("api: workspace proxy %s deleted by %s", px.name, c->user.username);
        api_reply_json(c, 200, json_pack("{s:s}", "message", "Proxy has been deleted!"));
        c->health_check = true;
    }
    store_proxy_fini(&px);
}

int
api_auth_proxy(struct api_ctx *c)
{
    const char *token = http_request_header(&c->ex->req, "Coder-External-Proxy-Token");
    char id[37];
    uint8_t hash[32];
    const char *detail = NULL;
    if (token == NULL || *token == '\0') {
        api_reply_error(c, 401, "Missing required external proxy token", NULL);
        return -1;
    }
    if (auth_proxy_token_split(token, id, hash, &detail) < 0) {
        api_reply_error(c, 401, "Invalid external proxy token", detail);
        return -1;
    }
    int rc = store_proxy_by_id(c->st, id, &c->proxy);
    if (rc == STORE_ENOTFOUND) {
        api_reply_error(c, 401, "Invalid external proxy token", "Proxy not found.");
        return -1;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace proxy.", NULL);
        return -1;
    }
    if (c->proxy.deleted) {
        api_reply_error(c, 401, "Invalid external proxy token", "Proxy has been deleted.");
        return -1;
    }
    if (!ct_equal(hash, c->proxy.token_hashed_secret, 32)) {
        api_reply_error(c, 401, "Invalid external proxy token", "Invalid proxy token secret.");
        return -1;
    }
    return 0;
}

static json_t *
replica_json(const struct store_replica *r)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:I, s:s, s:I}", "id", r->id, "hostname", r->hostname,
                     "created_at", time_json(r->created_at), "relay_address", r->relay_address,
                     "region_id", (json_int_t)r->region_id, "error", r->error, "database_latency",
                     (json_int_t)0);
}

void
api_proxies_register(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    bool bad = false;
    const char *access_url = api_str_field(j, "access_url", &bad);
    const char *wildcard = api_str_field(j, "wildcard_hostname", &bad);
    const char *replica_id = api_str_field(j, "replica_id", &bad);
    const char *hostname = api_str_field(j, "hostname", &bad);
    const char *replica_error = api_str_field(j, "replica_error", &bad);
    const char *relay = api_str_field(j, "replica_relay_address", &bad);
    const char *version = api_str_field(j, "version", &bad);
    bool derp_enabled = bool_field(j, "derp_enabled", &bad);
    bool derp_only = bool_field(j, "derp_only", &bad);
    struct store_replica *sibs = NULL, rep = {0}, old = {0};
    size_t nsibs = 0;
    struct apphost_pattern pat;
    char *perr = NULL;
    if (bad) {
        api_reply_error(c, 400, BAD_JSON,
                        "access_url, wildcard_hostname, replica_id, hostname, replica_error, "
                        "replica_relay_address and version must be strings, derp_enabled and "
                        "derp_only booleans");
        goto out;
    }
    if (access_url == NULL || !url_is_http_base(access_url)) {
        api_reply_error(c, 400, "URL is invalid.",
                        "access_url must be an http or https URL with no path");
        goto out;
    }
    if (wildcard && *wildcard) {
        if (apphost_pattern_compile(wildcard, &pat, &perr) < 0) {
            api_reply_error(c, 400, "Wildcard URL is invalid.", perr);
            goto out;
        }
        apphost_pattern_free(&pat);
    }
    if (derp_only && !derp_enabled) {
        api_reply_error(c, 400, "DerpOnly cannot be true when DerpEnabled is false.", NULL);
        goto out;
    }
    if (replica_id == NULL || !uuid_valid(replica_id) || uuid_is_nil(replica_id)) {
        api_reply_error(c, 400, "Replica ID is invalid.", NULL);
        goto out;
    }
    int64_t now = time_now_ms();
    if (store_begin(c->st) < 0)
        goto fail;
    if (store_proxy_register(c->st, c->proxy.id, access_url, wildcard ? wildcard : "", derp_enabled,
                             derp_only, version ? version : "", now) < 0)
        goto fail;
    snprintf(rep.id, sizeof(rep.id), "%s", replica_id);
    str_lower(rep.id);
    int rc = store_replica_by_id(c->st, rep.id, &old);
    if (rc == 0 && (old.stopped_at != 0 || strcmp(old.proxy_id, c->proxy.id) != 0)) {
        char *msg = xasprintf("Replica %s is marked stopped; a restarted proxy must use a new "
                              "replica ID.",
                              rep.id);
        api_reply_error(c, 409, msg, NULL);
        free(msg);
        goto out;
    }
    snprintf(rep.proxy_id, sizeof(rep.proxy_id), "%s", c->proxy.id);
    rep.hostname = xstrdup(hostname ? hostname : "");
    rep.version = xstrdup(version ? version : "");
    rep.relay_address = xstrdup(relay ? relay : "");
    rep.error = xstrdup(replica_error ? replica_error : "");
    rep.region_id = c->proxy.region_id;
    rep.created_at = rc == 0 ? old.created_at : now;
    rep.updated_at = now;
    if (store_replica_upsert(c->st, &rep) < 0 ||
        store_replica_list(c->st, c->proxy.id, &sibs, &nsibs) < 0 || store_commit(c->st) < 0)
        goto fail;
    json_t *arr = json_array();
    for (size_t i = 0; i < nsibs; i++) {
        if (strcmp(sibs[i].id, rep.id) != 0)
            json_array_append_new(arr, replica_json(&sibs[i]));
    }
    api_reply_json(c, 201,
                   json_pack("{s:s, s:I, s:n, s:b, s:o}", "derp_mesh_key", "", "derp_region_id",
                             (json_int_t)c->proxy.region_id, "derp_map", "derp_force_websockets", 0,
                             "sibling_replicas", arr));
    snprintf(c->registered, sizeof(c->registered), "%s", c->proxy.id);
    /* A new replica (a restarted proxy) or a moved access URL is checked at once, even when
     * the proxy looked healthy: what answers there now may be something else. */
    if (rc != 0 || strcmp(c->proxy.url ? c->proxy.url : "", access_url) != 0)
        c->health_check = true;
    goto out;
fail:
    api_reply_error(c, 500, "register workspace proxy: An internal server error occurred.", NULL);
out:
    store_rollback(c->st);
    free(perr);
    store_replica_fini(&rep);
    store_replica_fini(&old);
    store_replicas_free(sibs, nsibs);
    json_decref(j);
}

void
api_proxies_deregister(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (j == NULL)
        return;
    bool bad = false;
    const char *replica_id = api_str_field(j, "replica_id", &bad);
    struct store_replica rep = {0};
    char id[37] = "";
    if (replica_id && uuid_valid(replica_id)) {
        snprintf(id, sizeof(id), "%s", replica_id);
        str_lower(id);
    }
    int rc = id[0] ? store_replica_by_id(c->st, id, &rep) : STORE_ENOTFOUND;
    if (rc == STORE_ENOTFOUND || (rc == 0 && strcmp(rep.proxy_id, c->proxy.id) != 0)) {
        api_reply_error(c, 404, "Replica not found.", NULL);
    } else if (rc < 0 || store_replica_stop(c->st, id, time_now_ms()) < 0) {
        api_reply_error(c, 500, "Internal error deregistering workspace proxy.", NULL);
    } else {
        c->ex->status = 204;
        buf_reset(&c->ex->rbody);
        snprintf(c->deregistered, sizeof(c->deregistered), "%s", c->proxy.id);
    }
    store_replica_fini(&rep);
    json_decref(j);
}

/* GET /api/v2/workspaceproxies/me/crypto-keys?feature=F (proxy token): the keys a proxy
 * verifies app tokens, decrypts smuggled API keys and checks tunnel tickets with. */
void
api_proxies_crypto_keys(struct api_ctx *c)
{
    char *feature = http_request_query_param(&c->ex->req, "feature");
    if (!feature ||
        (!str_eq(feature, "workspace_apps_token") && !str_eq(feature, "workspace_apps_api_key") &&
         !str_eq(feature, "agent_tunnel"))) {
        char *msg = xasprintf("Invalid feature: %s", feature ? feature : "");
        api_reply_error(c, 400, msg, NULL);
        free(msg);
        free(feature);
        return;
    }
    struct store_crypto_key *v = NULL;
    size_t n = 0;
    if (store_crypto_key_list(c->st, feature, time_now_ms(), &v, &n) < 0) {
        api_reply_error(c, 500, "Internal error fetching crypto keys.", NULL);
        free(feature);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char starts[40], deletes[40];
        time_format_rfc3339(v[i].starts_at, starts, sizeof(starts));
        time_format_rfc3339(v[i].deletes_at, deletes, sizeof(deletes));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:I, s:s, s:s}", "feature", feature, "secret", v[i].secret,
                           "sequence", (json_int_t)v[i].sequence, "starts_at", starts, "deletes_at",
                           v[i].deletes_at ? deletes : "0001-01-01T00:00:00Z"));
    }
    store_crypto_keys_free(v, n);
    free(feature);
    api_reply_json(c, 200, json_pack("{s:o}", "crypto_keys", arr));
}

/* GET /api/v2/workspaceproxies/me/relay (proxy token): the upgrade into a relay link, over
 * which the proxy reaches agents that hold no tunnel to it (docs/TUNNEL.md §1). */
void
api_proxies_relay(struct api_ctx *c)
{
    const char *detail = NULL;
    const char *bad = agent_tunnels_check_request(&c->ex->req, &detail);
    if (bad) {
        api_reply_error(c, 400, bad, detail);
        return;
    }
    c->relay_link = true;
    c->ex->status = 101; /* the loop answers with the upgrade (api_job_done) */
}
