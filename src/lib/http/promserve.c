#include "http/promserve.h"
#include "base/util.h"
#include "metrics/metrics.h"

#include <stdlib.h>

static void
serve_metrics(struct http_exchange *ex, void *arg)
{
    char *text = metrics_registry_render(arg);
    http_reply_text(ex, 200, METRICS_CONTENT_TYPE, text);
    free(text);
}

struct http_server *
promserve_start(uv_loop_t *loop, struct metrics_registry *reg, const char *addr, char **err)
{
    struct http_server_opts o = {.handler = serve_metrics, .arg = reg, .max_body = 4096};
    struct http_server *s = http_server_new(loop, &o);
    if (http_server_listen(s, addr, NULL, NULL, 0, err) < 0) {
        char *why = *err;
        *err = xasprintf("start prometheus listener: %s", why);
        free(why);
        http_server_free(s);
        return NULL;
    }
    return s;
}
