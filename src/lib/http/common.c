#include "http/common.h"
#include "base/util.h"

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
    http_exchange_header(ex, "Access-Control-Allow-Origin", "*");
    http_exchange_header(ex, "Access-Control-Allow-Headers", "*");
    http_exchange_header(ex, "Access-Control-Allow-Methods", "*");
    http_exchange_header(ex, "Access-Control-Allow-Credentials", "false");
    http_reply_text(ex, 200, "text/plain; charset=utf-8", "OK");
}

bool
http_header_hop_by_hop(const char *name)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection",    "transfer-encoding", "upgrade",
        "te",         "trailer",    "proxy-authorization", "proxy-authenticate"};
    for (size_t i = 0; i < ARRAY_LEN(hop); i++) {
        if (str_eq_ci(name, hop[i]))
            return true;
    }
    return false;
}
