/* Workspaces, their agent and apps (issue 3, part 1). We have no provisioners: a workspace is
 * registered with its agent and apps in one request, and its JSON carries Coder's field names
 * for what exists here (one build, "running" until deleted). */
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "jose/jwt.h"
#include "primary.h"
#include "proxyhealth.h"
#include "appproxy/relay.h"
#include "tunnel/table.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_APPS 64
#define NIL_UUID "00000000-0000-0000-0000-000000000000"

/* ---- validation ---- */

/* App slugs: lower-case letters and digits, single hyphens inside, at most 32. */
static bool
slug_valid(const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            return false;
    }
    return api_name_valid(s);
}

static void
reply_invalid(struct api_ctx *c, const char *field, const char *detail)
{
    api_reply_json(c, 400,
                   json_pack("{s:s, s:[{s:s, s:s}]}", "message", "Validation failed.",
                             "validations", "field", field, "detail", detail));
}

/* ---- JSON ---- */

static json_t *
time_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char ts[40];
    time_format_rfc3339(ms, ts, sizeof(ts));
    return json_string(ts);
}

static json_t *
time_str(int64_t ms)
{
    char ts[40];
    time_format_rfc3339(ms, ts, sizeof(ts));
    return json_string(ts);
}

static const char *
agent_status(const struct store_agent *a)
{
    if (a->first_connected_at == 0)
        return "connecting";
    if (a->disconnected_at == 0 || a->last_connected_at > a->disconnected_at)
        return "connected";
    return "disconnected";
}

static json_t *
app_json(const struct store_app *app, const struct store_agent *a, const struct store_workspace *w,
         const char *owner)
{
    json_t *j = json_pack(
        "{s:s, s:s, s:b, s:s, s:s, s:b, s:s, s:{s:s, s:i, s:i}, s:s, s:b, s:s, s:[]}", "id",
        app->id, "url", app->url, "external", 0, "slug", app->slug, "display_name",
        app->display_name[0] ? app->display_name : app->slug, "subdomain", app->subdomain,
        "sharing_level", app->sharing_level, "healthcheck", "url", "", "interval", 0, "threshold",
        0, "health", "disabled", "hidden", 0, "open_in", "slim-window", "statuses");
    if (app->subdomain) {
        char *sub = xasprintf("%s--%s--%s--%s", app->slug, a->name, w->name, owner);
        json_object_set_new(j, "subdomain_name", json_string(sub));
        free(sub);
    }
    return j;
}

static json_t *
agent_json(struct api_ctx *c, const struct store_agent *a, const struct store_workspace *w,
           const char *owner)
{
    struct store_app *apps = NULL;
    size_t napps = 0;
    store_app_list(c->st, a->id, &apps, &napps);
    json_t *arr = json_array();
    for (size_t i = 0; i < napps; i++)
        json_array_append_new(arr, app_json(&apps[i], a, w, owner));
    store_apps_free(apps, napps);
    const char *status = agent_status(a);
    bool healthy = strcmp(status, "connected") == 0;
    json_t *j = json_pack(
        "{s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:{}, s:s, s:i, s:b, s:s, s:s, "
        "s:o, s:i, s:s, s:[], s:[s, s], s:[], s:[], s:s}",
        "id", a->id, "created_at", time_str(a->created_at), "updated_at", time_str(a->updated_at),
        "first_connected_at", time_or_null(a->first_connected_at), "last_connected_at",
        time_or_null(a->last_connected_at), "disconnected_at", time_or_null(a->disconnected_at),
        "status", status, "lifecycle_state", a->lifecycle_state, "name", a->name, "resource_id",
        w->id, "architecture", "", "environment_variables", "operating_system", "linux",
        "logs_length", 0, "logs_overflowed", 0, "version", a->version, "api_version", "2.0", "apps",
        arr, "connection_timeout_seconds", 120, "troubleshooting_url", "", "subsystems",
        "display_apps", "web_terminal", "port_forwarding_helper", "log_sources", "scripts",
        "startup_script_behavior", "non-blocking");
    json_object_set_new(
        j, "health",
        healthy ? json_pack("{s:b}", "healthy", 1)
                : json_pack("{s:b, s:s}", "healthy", 0, "reason", "agent is not connected"));
    return j;
}

static json_t *
workspace_json(struct api_ctx *c, const struct store_workspace *w, const struct store_user *owner)
{
    struct store_agent *agents = NULL;
    size_t nagents = 0;
    store_agent_list(c->st, w->id, &agents, &nagents);
    json_t *aj = json_array(), *failing = json_array();
    for (size_t i = 0; i < nagents; i++) {
        json_array_append_new(aj, agent_json(c, &agents[i], w, owner->username));
        if (strcmp(agent_status(&agents[i]), "connected") != 0)
            json_array_append_new(failing, json_string(agents[i].id));
    }
    store_agents_free(agents, nagents);
    bool healthy = json_array_size(failing) == 0;
    const char *status = w->deleted ? "deleted" : "running";
    const char *transition = w->deleted ? "delete" : "start";
    json_t *job =
        json_pack("{s:s, s:o, s:o, s:o, s:s, s:s, s:s, s:{}, s:i, s:i}", "id", w->id, "created_at",
                  time_str(w->created_at), "started_at", time_str(w->created_at), "completed_at",
                  time_str(w->updated_at), "status", "succeeded", "error", "", "file_id", NIL_UUID,
                  "tags", "queue_position", 0, "queue_size", 0);
    json_t *resource =
        json_pack("{s:s, s:o, s:s, s:s, s:s, s:s, s:b, s:s, s:o, s:[], s:i}", "id", w->id,
                  "created_at", time_str(w->created_at), "job_id", w->id, "workspace_transition",
                  transition, "type", "coder_agent", "name", "workspace", "hide", 0, "icon", "",
                  "agents", aj, "metadata", "daily_cost", 0);
    json_t *build = json_pack(
        "{s:s, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:o, s:s, s:[o], "
        "s:n, s:n, s:s, s:i}",
        "id", w->id, "created_at", time_str(w->created_at), "updated_at", time_str(w->updated_at),
        "workspace_id", w->id, "workspace_name", w->name, "workspace_owner_id", owner->id,
        "workspace_owner_name", owner->username, "template_version_id", NIL_UUID,
        "template_version_name", "", "build_number", 1, "transition", transition, "initiator_id",
        owner->id, "initiator_name", owner->username, "job", job, "reason", "initiator",
        "resources", resource, "deadline", "max_deadline", "status", status, "daily_cost", 0);
    json_object_set_new(build, "workspace_owner_avatar_url", json_string(""));
    json_t *j = json_pack(
        "{s:s, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:b, s:o, s:b, "
        "s:s, s:n, s:n, s:o, s:n, s:n, s:{s:b, s:o}, s:s, s:b, s:b}",
        "id", w->id, "created_at", time_str(w->created_at), "updated_at", time_str(w->updated_at),
        "owner_id", owner->id, "owner_name", owner->username, "owner_avatar_url", "",
        "organization_id", NIL_UUID, "organization_name", "coder", "template_id", NIL_UUID,
        "template_name", "", "template_display_name", "", "template_icon", "",
        "template_allow_user_cancel_workspace_jobs", 0, "template_active_version_id", NIL_UUID,
        "template_require_active_version", 0, "latest_build", build, "outdated", 0, "name", w->name,
        "autostart_schedule", "ttl_ms", "last_used_at",
        time_str(w->last_used_at ? w->last_used_at : w->created_at), "deleting_at", "dormant_at",
        "health", "healthy", healthy, "failing_agents", failing, "automatic_updates", "never",
        "allow_renames", 0, "favorite", 0);
    return j;
}

/* ---- lookups ---- */

static int
load_owner(struct api_ctx *c, const struct store_workspace *w, struct store_user *owner)
{
    if (store_user_by_id(c->st, w->owner_id, owner) < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace owner.", NULL);
        return -1;
    }
    return 0;
}

static void
not_found(struct api_ctx *c)
{
    api_reply_error(c, 404, "Resource not found or you do not have access to this resource", NULL);
}

/* The workspace named by the {workspace} id; members reach only their own. */
static int
load_workspace_param(struct api_ctx *c, struct store_workspace *w)
{
    const char *param = http_exchange_param(c->ex, "workspace");
    char id[37];
    if (!param || !uuid_valid(param)) {
        api_reply_error(c, 400, "Invalid UUID.", NULL);
        return -1;
    }
    snprintf(id, sizeof(id), "%s", param);
    int rc = store_workspace_by_id(c->st, str_lower(id), w);
    if (rc == 0 &&
        (w->deleted || (strcmp(w->owner_id, c->user.id) != 0 && !api_user_is_owner(&c->user)))) {
        store_workspace_fini(w);
        rc = STORE_ENOTFOUND;
    }
    if (rc == STORE_ENOTFOUND) {
        not_found(c);
        return -1;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error fetching workspace.", NULL);
        return -1;
    }
    return 0;
}

/* ---- handlers ---- */

/* Reads one app of the request into app; replies 400 and returns -1 when invalid. */
static int
app_from_json(struct api_ctx *c, json_t *a, size_t i, struct store_app *app)
{
    char field[64];
    snprintf(field, sizeof(field), "agents[0].apps[%zu]", i);
    bool bad = !json_is_object(a);
    const char *slug = bad ? NULL : api_str_field(a, "slug", &bad);
    const char *url = bad ? NULL : api_str_field(a, "url", &bad);
    const char *share = bad ? NULL : api_str_field(a, "sharing_level", &bad);
    const char *display = bad ? NULL : api_str_field(a, "display_name", &bad);
    json_t *sub = bad ? NULL : json_object_get(a, "subdomain");
    if (bad || (sub && !json_is_boolean(sub))) {
        reply_invalid(c, field,
                      "must be an object with string slug, url, sharing_level, "
                      "display_name and a boolean subdomain");
        return -1;
    }
    if (!slug || !slug_valid(slug)) {
        reply_invalid(c, field, "slug must be 1-32 lower-case letters, digits and single hyphens");
        return -1;
    }
    struct url u;
    bool url_ok = url && url_parse(url, &u) == 0;
    if (url_ok) {
        url_ok = (str_eq(u.scheme, "http") || str_eq(u.scheme, "https")) && u.host[0];
        url_free(&u);
    }
    if (!url_ok) {
        reply_invalid(c, field, "url must be an http or https URL with a host");
        return -1;
    }
    if (!share)
        share = "owner";
    if (!str_eq(share, "owner") && !str_eq(share, "authenticated") && !str_eq(share, "public")) {
        reply_invalid(c, field, "sharing_level must be one of owner, authenticated, public");
        return -1;
    }
    if (display && strlen(display) > 64) {
        reply_invalid(c, field, "display_name must be at most 64 characters");
        return -1;
    }
    uuid_new(app->id);
    app->slug = xstrdup(slug);
    app->url = xstrdup(url);
    app->sharing_level = xstrdup(share);
    app->display_name = xstrdup(display ? display : "");
    app->subdomain = sub && json_is_true(sub);
    app->created_at = time_now_ms();
    return 0;
}

void
api_workspaces_create(struct api_ctx *c)
{
    struct store_user owner = {0};
    if (api_resolve_user(c, &owner) < 0)
        return;
    json_t *j = api_read_json(c);
    struct store_workspace w = {0};
    struct store_agent a = {0};
    struct store_app *apps = NULL;
    size_t napps = 0;
    char token[37] = "";
    if (j == NULL)
        goto out;
    bool bad = false;
    const char *name = api_str_field(j, "name", &bad);
    json_t *agents = json_object_get(j, "agents");
    if (bad || !name || !api_name_valid(name)) {
        reply_invalid(c, "name", "Must be alphanumeric with hyphens (at most 32 characters).");
        goto out;
    }
    if (agents && (!json_is_array(agents) || json_array_size(agents) > 1)) {
        reply_invalid(c, "agents", "must be an array with one agent");
        goto out;
    }
    json_t *agent = json_array_get(agents, 0);
    if (agent && !json_is_object(agent)) {
        reply_invalid(c, "agents[0]", "must be an object");
        goto out;
    }
    const char *agent_name = agent ? api_str_field(agent, "name", &bad) : NULL;
    if (bad || (agent_name && !api_name_valid(agent_name))) {
        reply_invalid(c, "agents[0].name", "Must be alphanumeric with hyphens.");
        goto out;
    }
    json_t *japps = agent ? json_object_get(agent, "apps") : NULL;
    if (japps && (!json_is_array(japps) || json_array_size(japps) > MAX_APPS)) {
        reply_invalid(c, "agents[0].apps", "must be an array of at most 64 apps");
        goto out;
    }
    apps = xcalloc(json_array_size(japps) + 1, sizeof(*apps));
    for (size_t i = 0; i < json_array_size(japps); i++) {
        if (app_from_json(c, json_array_get(japps, i), i, &apps[napps]) < 0)
            goto out;
        for (size_t k = 0; k < napps; k++) {
            if (str_eq(apps[k].slug, apps[napps].slug)) {
                napps++;
                reply_invalid(c, "agents[0].apps", "app slugs must be unique");
                goto out;
            }
        }
        napps++;
    }
    int64_t now = time_now_ms();
    uuid_new(w.id);
    snprintf(w.owner_id, sizeof(w.owner_id), "%s", owner.id);
    w.name = xstrdup(name);
    w.created_at = w.updated_at = now;
    uuid_new(a.id);
    a.name = xstrdup(agent_name ? agent_name : "main");
    a.created_at = a.updated_at = now;
    a.version = xstrdup("");
    a.lifecycle_state = xstrdup("created");
    uuid_new(token); /* Coder's agent tokens are UUIDs; only the hash is kept */
    sha256(token, strlen(token), a.token_hash);
    int rc = store_workspace_create(c->st, &w, &a, apps, napps);
    if (rc == STORE_ECONFLICT) {
        char *msg = xasprintf("Workspace \"%s\" already exists.", name);
        api_reply_json(c, 409,
                       json_pack("{s:s, s:[{s:s, s:s}]}", "message", msg, "validations", "field",
                                 "name", "detail",
                                 "This value is already in use and should be unique."));
        free(msg);
        goto out;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error creating workspace.", NULL);
        goto out;
    }
    log_info("api: workspace %s/%s created by %s", owner.username, w.name, c->user.username);
    json_t *out = workspace_json(c, &w, &owner);
    json_object_set_new(out, "agent_token", json_string(token));
    api_reply_json(c, 201, out);
out:
    OPENSSL_cleanse(token, sizeof(token));
    for (size_t i = 0; i < napps; i++)
        store_app_fini(&apps[i]);
    free(apps);
    store_workspace_fini(&w);
    store_agent_fini(&a);
    store_user_fini(&owner);
    json_decref(j);
}

/* Reads the non-negative 32-bit query parameter key into *out (0 when absent). On a bad value
 * adds Coder's validation to errs and returns -1. */
static int
query_uint(struct api_ctx *c, const char *key, int64_t *out, json_t *errs)
{
    char *v = http_request_query_param(&c->ex->req, key);
    *out = 0;
    if (!v || !v[0]) {
        free(v);
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    const char *why = NULL;
    if (end == v || *end != '\0')
        why = "invalid syntax";
    else if (errno == ERANGE || n > INT32_MAX || n < INT32_MIN)
        why = "value out of range";
    else if (n < 0)
        why = "value is negative";
    if (why) {
        /* Go's strconv wording for the first two, as Coder passes it through. */
        char *detail =
            str_eq(why, "value is negative")
                ? xasprintf("Query param \"%s\" must be a valid 32-bit positive integer: %s", key,
                            why)
                : xasprintf("Query param \"%s\" must be a valid 32-bit positive integer: "
                            "strconv.ParseInt: parsing \"%s\": %s",
                            key, v, why);
        json_array_append_new(errs, json_pack("{s:s, s:s}", "field", key, "detail", detail));
        free(detail);
        free(v);
        return -1;
    }
    *out = n;
    free(v);
    return 0;
}

static void
reply_empty_list(struct api_ctx *c)
{
    api_reply_json(c, 200, json_pack("{s:[], s:i}", "workspaces", "count", 0));
}

/* GET /api/v2/workspaces?q=owner:me name:x&limit=N&offset=N: count is how many match before
 * the page is cut, as in Coder. */
void
api_workspaces_list(struct api_ctx *c)
{
    struct store_workspace_filter flt = {0};
    json_t *errs = json_array();
    query_uint(c, "limit", &flt.limit, errs);
    query_uint(c, "offset", &flt.offset, errs);
    if (json_array_size(errs) > 0) {
        api_reply_json(c, 400,
                       json_pack("{s:s, s:o}", "message", "Query parameters have invalid values.",
                                 "validations", errs));
        return;
    }
    json_decref(errs);
    char *q = http_request_query_param(&c->ex->req, "q");
    char owner_name[128] = "", name[128] = "";
    for (char *save = NULL, *t = strtok_r(q ? q : (char *)"", " ", &save); t;
         t = strtok_r(NULL, " ", &save)) {
        if (str_has_prefix(t, "owner:"))
            snprintf(owner_name, sizeof(owner_name), "%s", t + 6);
        else if (str_has_prefix(t, "name:"))
            snprintf(name, sizeof(name), "%s", t + 5);
        else if (!strchr(t, ':'))
            snprintf(name, sizeof(name), "%s", t);
    }
    free(q);
    struct store_user filter = {0};
    if (str_eq(owner_name, "me")) {
        flt.owner_id = c->user.id;
    } else if (owner_name[0]) {
        if (store_user_by_username(c->st, owner_name, &filter) < 0) {
            reply_empty_list(c);
            return;
        }
        flt.owner_id = filter.id;
    }
    /* Members see their own workspaces only. */
    if (!api_user_is_owner(&c->user)) {
        if (flt.owner_id && strcmp(flt.owner_id, c->user.id) != 0) {
            store_user_fini(&filter);
            reply_empty_list(c);
            return;
        }
        flt.owner_id = c->user.id;
    }
    flt.name = name;
    struct store_workspace *v = NULL;
    size_t n = 0;
    int64_t total = 0;
    if (store_workspace_list(c->st, &flt, &v, &n, &total) < 0) {
        store_user_fini(&filter);
        api_reply_error(c, 500, "Internal error fetching workspaces.", NULL);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        struct store_user owner = {0};
        if (load_owner(c, &v[i], &owner) == 0)
            json_array_append_new(arr, workspace_json(c, &v[i], &owner));
        store_user_fini(&owner);
    }
    store_workspaces_free(v, n);
    store_user_fini(&filter);
    api_reply_json(c, 200, json_pack("{s:o, s:I}", "workspaces", arr, "count", (json_int_t)total));
}

void
api_workspaces_get(struct api_ctx *c)
{
    struct store_workspace w = {0};
    if (load_workspace_param(c, &w) < 0)
        return;
    struct store_user owner = {0};
    if (load_owner(c, &w, &owner) == 0)
        api_reply_json(c, 200, workspace_json(c, &w, &owner));
    store_user_fini(&owner);
    store_workspace_fini(&w);
}

/* GET /api/v2/users/{user}/workspace/{workspacename} */
void
api_workspaces_by_name(struct api_ctx *c)
{
    struct store_user owner = {0};
    if (api_resolve_user(c, &owner) < 0)
        return;
    const char *name = http_exchange_param(c->ex, "workspacename");
    struct store_workspace w = {0};
    int rc = store_workspace_by_owner_name(c->st, owner.id, name ? name : "", &w);
    if (rc == STORE_ENOTFOUND)
        not_found(c);
    else if (rc < 0)
        api_reply_error(c, 500, "Internal error fetching workspace.", NULL);
    else
        api_reply_json(c, 200, workspace_json(c, &w, &owner));
    store_workspace_fini(&w);
    store_user_fini(&owner);
}

/* POST /api/v2/workspaces/{workspace}/builds {"transition": "delete"} */
void
api_workspaces_build(struct api_ctx *c)
{
    struct store_workspace w = {0};
    if (load_workspace_param(c, &w) < 0)
        return;
    json_t *j = api_read_json(c);
    if (j == NULL)
        goto out;
    bool bad = false;
    const char *transition = api_str_field(j, "transition", &bad);
    if (bad || !transition ||
        (!str_eq(transition, "delete") && !str_eq(transition, "start") &&
         !str_eq(transition, "stop"))) {
        reply_invalid(c, "transition", "must be one of start, stop, delete");
        goto out;
    }
    if (!str_eq(transition, "delete")) {
        api_reply_error(c, 400,
                        "Workspaces here are registered, not provisioned: only the "
                        "\"delete\" transition is supported.",
                        NULL);
        goto out;
    }
    int64_t now = time_now_ms();
    int rc = store_workspace_delete(c->st, w.id, now);
    if (rc == STORE_ENOTFOUND) {
        not_found(c);
        goto out;
    }
    if (rc < 0) {
        api_reply_error(c, 500, "Internal error deleting workspace.", NULL);
        goto out;
    }
    w.deleted = true;
    w.updated_at = now;
    /* Its agents' tunnels close: their tokens no longer authenticate. */
    struct store_agent *agents = NULL;
    size_t nagents = 0;
    if (store_agent_list(c->st, w.id, &agents, &nagents) == 0) {
        c->drop_agents = json_array();
        for (size_t i = 0; i < nagents; i++)
            json_array_append_new(c->drop_agents, json_string(agents[i].id));
    }
    store_agents_free(agents, nagents);
    struct store_user owner = {0};
    if (load_owner(c, &w, &owner) == 0) {
        json_t *ws = workspace_json(c, &w, &owner);
        json_t *build = json_incref(json_object_get(ws, "latest_build"));
        json_decref(ws);
        log_info("api: workspace %s/%s deleted by %s", owner.username, w.name, c->user.username);
        api_reply_json(c, 201, build);
    }
    store_user_fini(&owner);
out:
    json_decref(j);
    store_workspace_fini(&w);
}

/* ---- agents ---- */

int
api_auth_agent(struct api_ctx *c)
{
    const char *token = http_request_header(&c->ex->req, "Coder-Session-Token");
    uint8_t hash[32];
    if (token && *token) {
        sha256(token, strlen(token), hash);
        int rc = store_agent_by_token_hash(c->st, hash, &c->agent);
        if (rc == 0)
            return 0;
        if (rc != STORE_ENOTFOUND) {
            api_reply_error(c, 500, "Internal error authenticating agent.", NULL);
            return -1;
        }
    }
    api_reply_error(c, 401, "Workspace agent not authorized.",
                    "The agent cannot authenticate until the workspace provision job has been "
                    "completed. If the job is no longer running, this agent is invalid.");
    return -1;
}

/* The agent named by {workspaceagent} and its (live) workspace: a STORE_E code, or -100 after
 * answering 400 for a malformed id. */
static int
agent_param(struct api_ctx *c, struct store_agent *a, struct store_workspace *w)
{
    const char *param = http_exchange_param(c->ex, "workspaceagent");
    char id[37];
    if (!param || !uuid_valid(param)) {
        api_reply_error(c, 400, "Invalid UUID.", NULL);
        return -100;
    }
    snprintf(id, sizeof(id), "%s", param);
    int rc = store_agent_by_id(c->st, str_lower(id), a);
    if (rc == 0)
        rc = store_workspace_by_id(c->st, a->workspace_id, w);
    if (rc == 0 && w->deleted)
        rc = STORE_ENOTFOUND;
    return rc;
}

void
api_agents_get(struct api_ctx *c)
{
    struct store_agent a = {0};
    struct store_workspace w = {0};
    struct store_user owner = {0};
    int rc = agent_param(c, &a, &w);
    if (rc == -100)
        return;
    if (rc == 0 && strcmp(w.owner_id, c->user.id) != 0 && !api_user_is_owner(&c->user))
        rc = STORE_ENOTFOUND;
    if (rc == STORE_ENOTFOUND)
        not_found(c);
    else if (rc < 0)
        api_reply_error(c, 500, "Internal error fetching agent.", NULL);
    else if (load_owner(c, &w, &owner) == 0)
        api_reply_json(c, 200, agent_json(c, &a, &w, owner.username));
    store_user_fini(&owner);
    store_workspace_fini(&w);
    store_agent_fini(&a);
}

/* GET /api/v2/workspaceagents/me/manifest (agent token) */
void
api_agents_manifest(struct api_ctx *c)
{
    struct store_workspace w = {0};
    struct store_user owner = {0};
    if (store_workspace_by_id(c->st, c->agent.workspace_id, &w) < 0 ||
        load_owner(c, &w, &owner) < 0) {
        if (c->ex->status == 0)
            api_reply_error(c, 500, "Internal error fetching workspace.", NULL);
        goto out;
    }
    json_t *aj = agent_json(c, &c->agent, &w, owner.username);
    json_t *apps = json_incref(json_object_get(aj, "apps"));
    json_decref(aj);
    api_reply_json(
        c, 200,
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:[], s:s, s:o, s:n, s:b, s:{}, s:s, s:s, s:b, "
                  "s:[], s:[]}",
                  "agent_id", c->agent.id, "agent_name", c->agent.name, "owner_name",
                  owner.username, "workspace_id", w.id, "workspace_name", w.name,
                  "git_auth_configs", "vscode_port_proxy_uri", "", "apps", apps, "derpmap",
                  "derp_force_websockets", 0, "environment_variables", "directory", "", "motd_file",
                  "", "disable_direct_connections", 0, "metadata", "scripts"));
out:
    store_user_fini(&owner);
    store_workspace_fini(&w);
}

/* GET /api/v2/workspaceagents/me/tunnel (agent token): the upgrade of docs/TUNNEL.md §2. The
 * loop side performs it once this answers 101. */
void
api_agents_tunnel(struct api_ctx *c)
{
    const char *detail = NULL;
    const char *bad = agent_tunnels_check_request(&c->ex->req, &detail);
    if (bad) {
        api_reply_error(c, 400, bad, detail);
        return;
    }
    snprintf(c->tunnel_agent, sizeof(c->tunnel_agent), "%s", c->agent.id);
    c->ex->status = 101;
}

/* ---- the agent's region list, with tunnel tickets (docs/TUNNEL.md §3) ---- */

#define TICKET_TTL_S 600

int
api_feature_key(struct api_ctx *c, const char *feature, uint8_t key[64], size_t *len, int64_t *seq)
{
    struct store_crypto_key *v = NULL;
    size_t n = 0;
    int64_t now = time_now_ms();
    int rc = -1;
    if (store_crypto_key_list(c->st, feature, now, &v, &n) == 0) {
        for (size_t i = n; i-- > 0;) {
            if (v[i].starts_at > now)
                continue;
            long got = hex_decode(v[i].secret, strlen(v[i].secret), key, 64);
            if (got > 0) {
                *len = (size_t)got;
                *seq = v[i].sequence;
                rc = 0;
            }
            break;
        }
    }
    store_crypto_keys_free(v, n);
    return rc;
}

/* GET /api/v2/workspaceagents/me/regions (agent token): where the agent should hold tunnels.
 * The primary comes first; each healthy proxy comes with a ticket only it accepts. */
void
api_agents_regions(struct api_ctx *c)
{
    struct store_workspace w = {0};
    struct store_proxy *px = NULL;
    size_t npx = 0;
    uint8_t key[64];
    size_t keylen = 0;
    int64_t seq = 0;
    if (store_workspace_by_id(c->st, c->agent.workspace_id, &w) < 0 ||
        store_proxy_list(c->st, false, &px, &npx) < 0 ||
        api_feature_key(c, "agent_tunnel", key, &keylen, &seq) < 0) {
        api_reply_error(c, 500, "Internal error listing regions.", NULL);
        goto out;
    }
    json_t *arr = json_array();
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "id", c->p->deployment_id, "name",
                                         "primary", "url", c->p->cfg.access_url, "healthy", 1));
    int64_t now_s = time_now_ms() / 1000;
    char kid[24];
    snprintf(kid, sizeof(kid), "%lld", (long long)seq);
    for (size_t i = 0; i < npx; i++) {
        bool ok = false;
        json_t *status = proxyhealth_status_json(c->p->health, &px[i], &ok);
        json_decref(status);
        if (!ok || px[i].url[0] == '\0' || px[i].derp_only)
            continue;
        json_t *claims =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "iss", "coder", "aud", px[i].id,
                      "sub", c->agent.id, "wid", w.id, "uid", w.owner_id, "iat", (json_int_t)now_s,
                      "nbf", (json_int_t)now_s, "exp", (json_int_t)(now_s + TICKET_TTL_S));
        char *ticket = jose_sign_hs512(key, keylen, kid, claims);
        json_decref(claims);
        if (!ticket)
            continue;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b, s:s}", "id", px[i].id, "name",
                                             px[i].name, "url", px[i].url, "healthy", 1,
                                             "tunnel_ticket", ticket));
        free(ticket);
    }
    api_reply_json(c, 200, json_pack("{s:o}", "regions", arr));
out:
    OPENSSL_cleanse(key, sizeof(key));
    store_proxies_free(px, npx);
    store_workspace_fini(&w);
}

/* GET /api/v2/workspaceagents/{id}/port-forward?port=N (Upgrade: coder-tcp): a TCP stream to a
 * port in the workspace, for `coder port-forward`. The owner's only, as path apps. */
void
api_agents_port_forward(struct api_ctx *c)
{
    const char *msg = NULL, *detail = NULL;
    int port = app_port_forward_port(&c->ex->req, &msg, &detail);
    if (port < 0) {
        api_reply_error(c, 400, msg, detail);
        return;
    }
    struct store_agent a = {0};
    struct store_workspace w = {0};
    int rc = agent_param(c, &a, &w);
    if (rc == -100)
        return;
    if (rc == 0 && strcmp(w.owner_id, c->user.id) != 0)
        rc = STORE_ENOTFOUND;
    if (rc == STORE_ENOTFOUND) {
        not_found(c);
    } else if (rc < 0) {
        api_reply_error(c, 500, "Internal error fetching agent.", NULL);
    } else {
        snprintf(c->forward_agent, sizeof(c->forward_agent), "%s", a.id);
        c->forward_port = (int)port;
        c->ex->status = 101;
    }
    store_workspace_fini(&w);
    store_agent_fini(&a);
}
