/* Registration with the primary: the start-up check and first register, the re-register loop,
 * and deregistration at shutdown. */
#include "base/log.h"
#include "base/util.h"
#include "wsproxy.h"

#include <jansson.h>
#include <string.h>

#define ATTEMPT_TIMEOUT_MS 10000
#define MAX_FAILURES 10

void
wsproxy_primary_req(struct wsproxy *w, struct http_client_req *req, const char *method, char *url,
                    const char *body)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->url = url;
    req->headers = (const char *const *)w->headers;
    req->body = body;
    req->body_len = body ? strlen(body) : 0;
    req->timeout_ms = ATTEMPT_TIMEOUT_MS;
    req->client_cert = w->o->net.tls_client_cert_file;
    req->client_key = w->o->net.tls_client_key_file;
}

/* One line describing a failed call: the transport error, or the primary's status and message. */
static char *
describe_failure(const struct http_client_resp *r)
{
    if (r->status == 0)
        return xstrdup(r->error ? r->error : "request failed");
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(j, "message"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    char *out;
    if (msg && detail && *detail)
        out = xasprintf("unexpected status code %ld: %s: %s", r->status, msg, detail);
    else if (msg)
        out = xasprintf("unexpected status code %ld: %s", r->status, msg);
    else
        out = xasprintf("unexpected status code %ld", r->status);
    json_decref(j);
    return out;
}

static char *
register_body(struct wsproxy *w)
{
    const char *wild = w->o->net.wildcard_access_url ? w->o->net.wildcard_access_url : "";
    json_t *j = json_pack(
        "{s:s, s:s, s:b, s:b, s:s, s:s, s:s, s:s, s:s}", "access_url", w->access_url,
        "wildcard_hostname", wild, "derp_enabled", w->o->derp_server_enable, "derp_only",
        w->o->derp_only, "replica_id", w->replica_id, "hostname", w->hostname, "replica_error", "",
        "replica_relay_address", w->o->derp_server_relay_url ? w->o->derp_server_relay_url : "",
        "version", CODER_VERSION);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* Compares major.minor of two "vX.Y.Z..." versions. */
static bool
versions_match(const char *a, const char *b)
{
    int amaj = -1, amin = -1, bmaj = -2, bmin = -2;
    sscanf(a[0] == 'v' ? a + 1 : a, "%d.%d", &amaj, &amin);
    sscanf(b[0] == 'v' ? b + 1 : b, "%d.%d", &bmaj, &bmin);
    return amaj == bmaj && amin == bmin;
}

static int
check_buildinfo(struct wsproxy *w, char **err)
{
    struct http_client_req req;
    struct http_client_resp resp;
    char *url = xasprintf("%s/api/v2/buildinfo", w->primary_url);
    wsproxy_primary_req(w, &req, "GET", url, NULL);
    http_client_resp_init(&resp);
    int rc = http_client_do(&req, &resp);
    json_t *j = NULL;
    if (rc == 0 && resp.status == 200)
        j = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    const char *version = json_string_value(json_object_get(j, "version"));
    if (rc < 0 || resp.status != 200 || !json_is_object(j) || version == NULL) {
        char *why = rc < 0 ? xstrdup(resp.error)
                           : (resp.status != 200 ? describe_failure(&resp)
                                                 : xstrdup("the response is not Coder build info"));
        *err = xasprintf("unable to fetch build info from primary coderd. Are you sure \"%s\" is a "
                         "coderd instance?: %s",
                         w->primary_url, why);
        free(why);
        rc = -1;
    } else if (json_is_true(json_object_get(j, "workspace_proxy"))) {
        *err =
            xasprintf("\"%s\" is a workspace proxy, not a primary coderd instance", w->primary_url);
        rc = -1;
    } else {
        if (!versions_match(version, CODER_VERSION))
            log_warn("wsproxy: workspace proxy version doesn't match Minor.Major version of the "
                     "primary, please keep them in sync  primary_version=%s proxy_version=%s",
                     version, CODER_VERSION);
        rc = 0;
    }
    json_decref(j);
    http_client_resp_fini(&resp);
    free(url);
    return rc;
}

int
wsproxy_register_first(struct wsproxy *w, char **err)
{
    if (check_buildinfo(w, err) < 0)
        return -1;
    struct http_client_req req;
    struct http_client_resp resp;
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/register", w->primary_url);
    char *body = register_body(w);
    wsproxy_primary_req(w, &req, "POST", url, body);
    http_client_resp_init(&resp);
    int rc = http_client_do(&req, &resp);
    if (rc < 0 || resp.status != 201) {
        char *why = describe_failure(&resp);
        *err = xasprintf("register workspace proxy with the primary: %s", why);
        free(why);
        rc = -1;
    } else {
        json_t *j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
        w->region_id = json_integer_value(json_object_get(j, "derp_region_id"));
        json_decref(j);
        log_info("wsproxy: registered with the primary  primary=%s region_id=%lld replica_id=%s",
                 w->primary_url, (long long)w->region_id, w->replica_id);
        rc = 0;
    }
    http_client_resp_fini(&resp);
    free(body);
    free(url);
    return rc;
}

static void
on_reregistered(struct http_client_resp *r, void *arg)
{
    struct wsproxy *w = arg;
    w->registering = false;
    if (w->stopping)
        return;
    if (r->status == 201) {
        if (w->failures > 0)
            log_info("wsproxy: re-registered with the primary after %d failures", w->failures);
        w->failures = 0;
        return;
    }
    char *why = describe_failure(r);
    if (r->status == 401) {
        /* The token was revoked or the proxy deleted: retrying cannot help. */
        char *msg = xasprintf("the primary rejected this proxy's token: %s", why);
        wsproxy_stop(w, 1, msg);
        free(msg);
    } else if (++w->failures >= MAX_FAILURES) {
        char *msg = xasprintf("failed to re-register with the primary %d times in a row: %s",
                              w->failures, why);
        wsproxy_stop(w, 1, msg);
        free(msg);
    } else {
        log_warn("wsproxy: re-register with the primary failed (%d/%d): %s", w->failures,
                 MAX_FAILURES, why);
    }
    free(why);
}

static void
on_register_timer(uv_timer_t *t)
{
    struct wsproxy *w = t->data;
    if (w->registering || w->stopping)
        return;
    struct http_client_req req;
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/register", w->primary_url);
    char *body = register_body(w);
    wsproxy_primary_req(w, &req, "POST", url, body);
    if (http_client_start(w->client, &req, on_reregistered, w) == 0)
        w->registering = true;
    free(body);
    free(url);
}

void
wsproxy_register_start(struct wsproxy *w)
{
    w->register_timer.data = w;
    uint64_t every = (uint64_t)w->o->reregister_ms;
    uv_timer_start(&w->register_timer, on_register_timer, every, every);
}

struct dereg {
    struct wsproxy *w;
    void (*done)(struct wsproxy *w);
};

static void
on_deregistered(struct http_client_resp *r, void *arg)
{
    struct dereg *d = arg;
    if (r->status == 204) {
        log_info("wsproxy: deregistered from the primary");
    } else {
        char *why = describe_failure(r);
        log_warn("wsproxy: deregister from the primary failed: %s", why);
        free(why);
    }
    d->done(d->w);
    free(d);
}

void
wsproxy_deregister(struct wsproxy *w, void (*done)(struct wsproxy *w))
{
    uv_timer_stop(&w->register_timer);
    struct http_client_req req;
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/deregister", w->primary_url);
    char *body = xasprintf("{\"replica_id\":\"%s\"}", w->replica_id);
    wsproxy_primary_req(w, &req, "POST", url, body);
    struct dereg *d = xcalloc(1, sizeof(*d));
    d->w = w;
    d->done = done;
    if (http_client_start(w->client, &req, on_deregistered, d) < 0) {
        free(d);
        done(w);
    }
    free(body);
    free(url);
}
