/* App cookies and the session hand-off between domains: see cookies.h. */
#include "appproxy/cookies.h"
#include "base/buf.h"
#include "base/crypto.h"
#include "base/timeutil.h"
#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *
app_subdomain_cookie_name(const struct apphost_pattern *wildcard)
{
    uint8_t sum[32];
    char hex[65];
    sha256(wildcard->host, strlen(wildcard->host), sum);
    hex_encode(sum, sizeof(sum), hex);
    return xasprintf("coder_subdomain_app_session_token_%.32s", hex);
}

char *
app_session_token(const struct http_request *req, const struct app_request *r,
                  const struct apphost_pattern *wildcard)
{
    const char *h = http_request_header(req, "Coder-Session-Token");
    if (h && *h)
        return xstrdup(h);
    char *t = http_request_cookie(req, "coder_session_token");
    if (!t || !*t) {
        free(t);
        t = http_request_query_param(req, "coder_session_token");
    }
    if (t && *t)
        return t;
    free(t);
    if (r->access == APP_ACCESS_PATH) {
        t = http_request_cookie(req, APP_PATH_SESSION_COOKIE);
    } else if (wildcard) {
        char *name = app_subdomain_cookie_name(wildcard);
        t = http_request_cookie(req, name);
        free(name);
    }
    if (t && *t)
        return t;
    free(t);
    return NULL;
}

/* The query without APP_KEY_PARAM pairs (a new string, "" when nothing is left). */
static char *
strip_key_param(const char *query)
{
    struct buf b;
    buf_init(&b);
    size_t klen = strlen(APP_KEY_PARAM);
    for (const char *p = query; *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        bool ours =
            n >= klen && strncmp(p, APP_KEY_PARAM, klen) == 0 && (n == klen || p[klen] == '=');
        if (!ours && n > 0)
            buf_printf(&b, "%s%.*s", b.len ? "&" : "", (int)n, p);
        p += n + (amp ? 1 : 0);
    }
    char *out = xstrdup(b.data ? b.data : "");
    buf_fini(&b);
    return out;
}

void
app_reply_session_cookie(struct http_exchange *ex, const struct app_request *r,
                         const struct apphost_pattern *wildcard, const char *api_key, bool secure)
{
    const char *flags = secure ? "; Secure" : "";
    if (r->access == APP_ACCESS_SUBDOMAIN && wildcard) {
        /* One cookie per wildcard, for every app under it: the domain is the pattern's parent
         * ("*.apps.example.com" -> "apps.example.com"). */
        char *name = app_subdomain_cookie_name(wildcard);
        const char *dot = strchr(wildcard->host, '.');
        http_exchange_header_printf(ex, "Set-Cookie",
                                    "%s=%s; Path=/; Domain=.%s; HttpOnly; SameSite=Lax%s", name,
                                    api_key, dot ? dot + 1 : wildcard->host, flags);
        free(name);
    } else {
        http_exchange_header_printf(ex, "Set-Cookie", "%s=%s; Path=/; HttpOnly; SameSite=Lax%s",
                                    APP_PATH_SESSION_COOKIE, api_key, flags);
    }
    /* Back to the same path, built so that it cannot name another host: one leading '/',
     * and backslashes (which browsers read as '/', so "/\\evil" is "//evil") escaped. */
    char *q = strip_key_param(ex->req.query);
    const char *path = ex->req.path;
    while (*path == '/' || *path == '\\')
        path++;
    struct buf p;
    buf_init(&p);
    buf_putc(&p, '/');
    for (; *path; path++) {
        if (*path == '\\')
            buf_puts(&p, "%5C");
        else
            buf_putc(&p, *path);
    }
    char *loc = xasprintf("%s%s%s", p.data, *q ? "?" : "", q);
    buf_fini(&p);
    http_exchange_header(ex, "Location", loc);
    http_exchange_header(ex, "Cache-Control", "no-store");
    free(loc);
    free(q);
    http_exchange_finish(ex, 303);
}

void
app_set_token_cookie(struct http_exchange *ex, const struct app_request *r, const char *token,
                     int64_t exp_s, bool secure)
{
    char when[64];
    time_format_http(exp_s, when, sizeof(when));
    http_exchange_header_printf(ex, "Set-Cookie", "%s=%s; Path=%s; Expires=%s; HttpOnly%s",
                                APP_TOKEN_COOKIE, token, r->base_path, when,
                                secure ? "; Secure" : "");
}
