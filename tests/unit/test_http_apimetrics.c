/* Coder's API metrics (http/apimetrics.c): the exact series a scrape shows for routed and
 * unrouted requests, and the concurrency gauge going up and back down. Upgraded connections
 * (api_metrics_upgraded) need a live stream and are covered end to end, not here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fake_exchange.h"
#include "http/apimetrics.h"
#include "metrics/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct metrics_registry *reg;
    struct api_metrics *m;
    struct http_server *srv;
    char *text;
};

static struct fixture f;

static int
setup(void **state)
{
    f.reg = metrics_registry_new();
    f.m = api_metrics_new(f.reg);
    f.srv = fake_server();
    return 0;
}

static int
teardown(void **state)
{
    api_metrics_free(f.m);
    metrics_registry_free(f.reg);
    http_server_free(f.srv);
    free(f.text);
    fake_answer_reset();
    memset(&f, 0, sizeof(f));
    return 0;
}

static const char *
render(void)
{
    free(f.text);
    f.text = metrics_registry_render(f.reg);
    return f.text;
}

static bool
has_line(const char *line)
{
    char pat[512];
    snprintf(pat, sizeof(pat), "\n%s\n", line);
    return strstr(render(), pat) != NULL;
}

/* A request as the server runs it: routed (begin) or not, then answered, then end. */
static void
request(const char *method, const char *target, const char *route, int status)
{
    struct http_exchange *ex = fake_exchange(f.srv, method, target, false, NULL);
    ex->route = route;
    ex->routed = route != NULL;
    if (ex->routed)
        api_metrics_begin(f.m, ex);
    ex->status = status;
    api_metrics_end(f.m, ex);
    fake_exchange_drop(ex);
}

static void
test_families_exist(void **state)
{
    /* Labelled families show only once they have a series: nothing yet. */
    assert_null(strstr(render(), "coderd_api_requests_processed_total{"));
    request("GET", "/healthz", "/healthz", 200);
    const char *out = render();
    assert_non_null(strstr(out, "# HELP coderd_api_requests_processed_total The total number of "
                                "processed API requests\n"
                                "# TYPE coderd_api_requests_processed_total counter\n"));
    assert_non_null(strstr(out, "# HELP coderd_api_request_latencies_seconds Latency "
                                "distribution of requests in seconds.\n"
                                "# TYPE coderd_api_request_latencies_seconds histogram\n"));
    assert_non_null(strstr(out, "# HELP coderd_api_concurrent_requests The number of concurrent "
                                "API requests.\n# TYPE coderd_api_concurrent_requests gauge\n"));
}

static void
test_routed_requests(void **state)
{
    request("GET", "/api/v2/workspaceproxies/abc?x=1", "/api/v2/workspaceproxies/{workspaceproxy}",
            200);
    request("GET", "/api/v2/workspaceproxies/def", "/api/v2/workspaceproxies/{workspaceproxy}",
            200);
    request("DELETE", "/api/v2/workspaceproxies/abc", "/api/v2/workspaceproxies/{workspaceproxy}",
            404);
    /* The route pattern, never the path: two proxies, one series. */
    assert_true(has_line("coderd_api_requests_processed_total{code=\"200\",method=\"GET\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\"} 2"));
    assert_true(has_line("coderd_api_requests_processed_total{code=\"404\",method=\"DELETE\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\"} 1"));
    assert_null(strstr(render(), "/api/v2/workspaceproxies/abc"));
    /* Every request landed in the histogram; fast ones in the first bucket. */
    assert_true(has_line("coderd_api_request_latencies_seconds_count{method=\"GET\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\"} 2"));
    assert_true(has_line("coderd_api_request_latencies_seconds_bucket{method=\"GET\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\",le=\"+Inf\"} 2"));
    assert_true(has_line("coderd_api_request_latencies_seconds_bucket{method=\"GET\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\",le=\"30\"} 2"));
    /* Each went up and came back down. */
    assert_true(has_line("coderd_api_concurrent_requests{method=\"GET\","
                         "path=\"/api/v2/workspaceproxies/{workspaceproxy}\"} 0"));
}

static void
test_unrouted_requests_share_one_series(void **state)
{
    request("GET", "/random/1", NULL, 404);
    request("GET", "/random/2?a=b", NULL, 404);
    request("POST", "/xyz", NULL, 404);
    assert_true(
        has_line("coderd_api_requests_processed_total{code=\"404\",method=\"GET\",path=\"/*\"} 2"));
    assert_true(has_line(
        "coderd_api_requests_processed_total{code=\"404\",method=\"POST\",path=\"/*\"} 1"));
    assert_null(strstr(render(), "/random"));
    /* Never begun, so never taken down: no gauge series at all, certainly not -1. */
    assert_null(strstr(render(), "coderd_api_concurrent_requests{"));
}

static void
test_concurrency_while_in_flight(void **state)
{
    struct http_exchange *a = fake_exchange(f.srv, "GET", "/api/v2/x", false, NULL);
    struct http_exchange *b = fake_exchange(f.srv, "GET", "/api/v2/x", false, NULL);
    a->route = b->route = "/api/v2/x";
    a->routed = b->routed = true;
    api_metrics_begin(f.m, a);
    api_metrics_begin(f.m, b);
    assert_true(has_line("coderd_api_concurrent_requests{method=\"GET\",path=\"/api/v2/x\"} 2"));
    a->status = 200;
    api_metrics_end(f.m, a);
    assert_true(has_line("coderd_api_concurrent_requests{method=\"GET\",path=\"/api/v2/x\"} 1"));
    b->status = 500;
    api_metrics_end(f.m, b);
    assert_true(has_line("coderd_api_concurrent_requests{method=\"GET\",path=\"/api/v2/x\"} 0"));
    assert_true(has_line(
        "coderd_api_requests_processed_total{code=\"500\",method=\"GET\",path=\"/api/v2/x\"} 1"));
    fake_exchange_drop(a);
    fake_exchange_drop(b);
    /* A NULL collector (metrics off) is accepted. */
    struct http_exchange *c = fake_exchange(f.srv, "GET", "/", false, NULL);
    api_metrics_begin(NULL, c);
    api_metrics_end(NULL, c);
    api_metrics_upgraded(NULL, c, NULL);
    fake_exchange_drop(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_families_exist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrouted_requests_share_one_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_while_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
