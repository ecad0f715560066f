#include "http/common.h"
#include "base/util.h"
#include "http/url.h"

#include <string.h>
#include <strings.h>

void
http_common_headers(struct http_exchange *ex, int64_t hsts_max_age, const char *hsts_opts)
{
    http_exchange_header(ex, "X-Coder-Build-Version", CODER_VERSION);
    http_exchange_header(ex, "X-Content-Type-Options", "nosniff");
    if (!ex->req.tls || hsts_max_age <= 0)
        return;
    if (hsts_opts && *hsts_opts)
        http_exchange_header_printf(ex, "Strict-Transport-Security", "max-age=%lld; %s",
                                    (long long)hsts_max_age, hsts_opts);
    else
        http_exchange_header_printf(ex, "Strict-Transport-Security", "max-age=%lld",
                                    (long long)hsts_max_age);
}

void
http_common_healthz(struct http_exchange *ex, void *arg)
{
    http_reply_text(ex, 200, "text/plain; charset=utf-8", "OK");
}

void
http_common_latency_check(struct http_exchange *ex, void *arg)
{
    http_exchange_header(ex, "Timing-Allow-Origin", "*");
    http_exchange_header_set(ex, "Access-Control-Allow-Origin", "*"); /* not the CORS one too */
    http_exchange_header(ex, "Access-Control-Allow-Headers", "*");
    http_exchange_header(ex, "Access-Control-Allow-Methods", "*");
    http_exchange_header(ex, "Access-Control-Allow-Credentials", "false");
    http_reply_text(ex, 200, "text/plain; charset=utf-8", "OK");
}

/* True when origin (scheme://host[:port]) names the same scheme, host and port as url. */
static bool
same_origin(const char *origin, const char *url)
{
    struct url a, b;
    if (url_parse(origin, &a) < 0)
        return false;
    bool same = false;
    if (url_parse(url, &b) == 0) {
        same = a.has_authority && str_eq(a.scheme, b.scheme) && str_eq(a.host, b.host) &&
               url_default_port(&a) == url_default_port(&b) && !a.has_userinfo &&
               (!*a.path || str_eq(a.path, "/")) && !a.has_query;
        url_free(&b);
    }
    url_free(&a);
    return same;
}

/* Every comma-separated name in list is one of the allowed request headers. */
static bool
cors_headers_allowed(const char *list)
{
    static const char *const allowed[] = {"accept", "content-type", "x-latency-check",
                                          "x-csrf-token"};
    for (const char *p = list; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n == 0)
            break;
        bool ok = false;
        for (size_t i = 0; i < ARRAY_LEN(allowed) && !ok; i++)
            ok = n == strlen(allowed[i]) && strncasecmp(p, allowed[i], n) == 0;
        if (!ok)
            return false;
        p += n;
    }
    return true;
}

bool
http_common_cors(struct http_exchange *ex, const char *trusted_url)
{
    const char *origin = http_request_header(&ex->req, "Origin");
    bool trusted = origin && trusted_url && same_origin(origin, trusted_url);
    const char *want = http_request_header(&ex->req, "Access-Control-Request-Method");
    bool preflight = str_eq(ex->req.method, "OPTIONS") && want;
    if (!preflight) {
        if (trusted) {
            http_exchange_header(ex, "Access-Control-Allow-Origin", origin);
            http_exchange_header(ex, "Vary", "Origin");
        }
        return false;
    }
    http_exchange_header(ex, "Vary",
                         "Origin, Access-Control-Request-Method, "
                         "Access-Control-Request-Headers");
    const char *hdrs = http_request_header(&ex->req, "Access-Control-Request-Headers");
    if (trusted && (str_eq(want, "GET") || str_eq(want, "OPTIONS")) &&
        (!hdrs || cors_headers_allowed(hdrs))) {
        http_exchange_header(ex, "Access-Control-Allow-Origin", origin);
        http_exchange_header(ex, "Access-Control-Allow-Methods", want);
        if (hdrs && *hdrs)
            http_exchange_header(ex, "Access-Control-Allow-Headers", hdrs);
    }
    http_reply_text(ex, 200, "text/plain; charset=utf-8", "");
    return true;
}

bool
http_header_hop_by_hop(const char *name)
{
    /* clang-format off */
#define HOP(s) {s, sizeof(s) - 1}
    /* clang-format on */
    static const struct {
        const char *name;
        size_t len;
    } hop[] = {HOP("connection"),        HOP("keep-alive"),
               HOP("proxy-connection"),  HOP("transfer-encoding"),
               HOP("upgrade"),           HOP("te"),
               HOP("trailer"),           HOP("proxy-authorization"),
               HOP("proxy-authenticate")};
#undef HOP
    /* Every relayed header comes through here: compare only the names of the same length. */
    size_t n = strlen(name);
    for (size_t i = 0; i < ARRAY_LEN(hop); i++) {
        if (n == hop[i].len && strncasecmp(name, hop[i].name, n) == 0)
            return true;
    }
    return false;
}
