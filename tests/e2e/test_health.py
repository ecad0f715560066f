"""The primary's proxy health checks (CODER-COMPAT §4) with a 1 s interval, seen through the API,
`coder wsproxy ls` (table and text) and the primary's Prometheus metrics."""

import pytest

import harness
from harness import metric_samples, wait_for

# Gauge values of coderd_proxyhealth_health_check_results.
RESULT_VALUE = {"ok": 1.0, "unregistered": 0.0, "unhealthy": -1.0, "unreachable": -2.0}


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack(health_interval="1s", prometheus=True)


def _table_status(stack, name):
    for row in stack.client.ls_table():
        if row["name"] == name:
            return row["proxy status"]
    return None


def _text_entry(stack, name):
    r = stack.client.run("wsproxy", "ls", "-o", "text")
    assert r.rc == 0, r
    rows = harness.parse_ls_text(r.stdout)
    assert rows[0]["name"] == "primary"
    return {row["name"]: row for row in rows}.get(name)


def _expect(stack, name, status, timeout=5.0, error=None):
    """Wait until the API shows `status` (and, if given, an error containing `error`), then
    require ls (table) and metrics to agree."""
    proxy = stack.wait_status(name, status, timeout=timeout)
    if error is not None:
        def has_error():
            p = stack.proxy(name)
            return (p["status"]["status"] == status
                    and any(error in e for e in p["status"]["report"]["errors"])) and p

        proxy = wait_for(has_error, timeout, 0.1, f"{name} {status} with error {error!r}")
    assert proxy["healthy"] is (status == "ok")
    wait_for(lambda: _table_status(stack, name) == status, 3, 0.2,
             f"ls table shows {name} {status}")

    def metric_agrees():
        samples = metric_samples(stack.primary.metrics(),
                                 "coderd_proxyhealth_health_check_results")
        vals = [v for labels, v in samples if labels.get("proxy_id") == proxy["id"]]
        return vals == [RESULT_VALUE[status]]

    wait_for(metric_agrees, 3, 0.2, f"metric for {name} = {RESULT_VALUE[status]}")
    return stack.proxy(name)


def test_status_transitions(stack):
    created, token = stack.create_proxy("cycle")
    p = _expect(stack, "cycle", "unregistered")
    assert p["status"]["report"] == {"errors": [], "warnings": []}
    assert p["status"]["checked_at"]

    proxy = stack.start_proxy(token, name="cycle").start()
    p = _expect(stack, "cycle", "ok")
    assert p["path_app_url"].rstrip("/") == proxy.url
    assert p["status"]["report"] == {"errors": [], "warnings": []}

    # Graceful stop deregisters: unreachable at once.
    assert proxy.stop() == 0
    _expect(stack, "cycle", "unreachable", timeout=3)

    proxy.start()
    _expect(stack, "cycle", "ok")

    # kill -9: the next check cannot connect.
    proxy.kill9()
    _expect(stack, "cycle", "unreachable", error="request to proxy failed")
    entry = _text_entry(stack, "cycle")
    assert entry["status"] == "unreachable"
    assert any("request to proxy failed" in e for e in entry["errors"]), entry

    # Delete: gone from the list, the API, and the metrics.
    r = stack.client.run("wsproxy", "delete", "cycle", "-y")
    assert r.rc == 0, r
    assert 'Workspace proxy "cycle" deleted successfully' in r.stdout
    assert stack.proxy("cycle") is None
    assert _table_status(stack, "cycle") is None
    r = stack.api.get("/api/v2/workspaceproxies/cycle")
    assert r.status_code == 404, r.text

    def metric_gone():
        samples = metric_samples(stack.primary.metrics(),
                                 "coderd_proxyhealth_health_check_results")
        return not [v for labels, v in samples if labels.get("proxy_id") == created["id"]]

    wait_for(metric_gone, 3, 0.2, "metric sample of a deleted proxy removed")


def test_not_a_proxy_instance_and_recovery(stack):
    """The registered URL points at a plain web server: unhealthy with a clear reason; the
    status follows what that server answers, on a fresh connection every time."""
    web = stack.ctx.fake_web_server()
    _, token = stack.create_proxy("misrouted")
    proxy = stack.start_proxy(token, name="misrouted", access_url=web.url).start()
    assert proxy.url == web.url

    p = _expect(stack, "misrouted", "unhealthy", error="is not a coder proxy instance")
    assert p["path_app_url"].rstrip("/") == web.url
    entry = _text_entry(stack, "misrouted")
    assert entry["status"] == "unhealthy"
    assert any("is not a coder proxy instance" in e for e in entry["errors"]), entry

    # The server now answers like a proxy with a warning: ok, warnings kept.
    web.report = {"errors": [], "warnings": ["careful now"]}
    web.mode = "json-report"
    p = _expect(stack, "misrouted", "ok")
    assert p["status"]["report"] == {"errors": [], "warnings": ["careful now"]}
    entry = _text_entry(stack, "misrouted")
    assert entry["warnings"] == ["careful now"] and entry["errors"] == [], entry

    # A report with errors: unhealthy with exactly those errors.
    web.report = {"errors": ["disk on fire"], "warnings": []}
    p = _expect(stack, "misrouted", "unhealthy", error="disk on fire")
    assert p["status"]["report"]["errors"] == ["disk on fire"]
    assert _text_entry(stack, "misrouted")["errors"] == ["disk on fire"]

    # A non-200 answer.
    web.mode = "status"
    web.status = 500
    p = _expect(stack, "misrouted", "unhealthy", error="unexpected status code 500")
    errs = p["status"]["report"]["errors"]
    assert any("unexpected status code 500" in e for e in errs), errs

    # Every check used a fresh connection (Coder issue #29045: stale keep-alive reuse).
    checks = web.requests_to("/healthz-report")
    assert len(checks) >= 4, checks
    ports = [port for _, port in checks]
    assert len(set(ports)) == len(ports), f"connection reused: {ports}"
    proxy.stop()


def test_primary_metrics(stack):
    def ready():
        text = stack.primary.metrics()
        names = ("coderd_proxyhealth_health_check_results",
                 "coderd_proxyhealth_health_check_duration_seconds",
                 "coderd_api_requests_processed_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds",
                 "process_cpu_seconds_total")
        return all(n in text for n in names) and text

    text = wait_for(ready, 5, 0.2, "primary metrics")
    for line in text.splitlines():
        if line.startswith("# TYPE coderd_proxyhealth_health_check_results "):
            assert line.split()[-1] == "gauge"
        if line.startswith("# TYPE coderd_api_requests_processed_total "):
            assert line.split()[-1] == "counter"
    reqs = metric_samples(text, "coderd_api_requests_processed_total")
    assert reqs and all({"code", "method", "path"} <= set(lbl) for lbl, _ in reqs), reqs[:3]
    # Latencies in fractions of a second (a fast request is not 0 s), and the concurrency
    # gauge back at 0 for finished routes.
    for _ in range(20):
        assert stack.primary.api().get("/api/v2/buildinfo").status_code == 200
    text = stack.primary.metrics()
    sums = {lbl["path"]: v for lbl, v in
            metric_samples(text, "coderd_api_request_latencies_seconds_sum")
            if lbl.get("method") == "GET"}
    assert 0 < sums["/api/v2/buildinfo"] < 20, sums
    conc = {lbl["path"]: v for lbl, v in metric_samples(text, "coderd_api_concurrent_requests")
            if lbl.get("method") == "GET"}
    assert conc.get("/api/v2/buildinfo") == 0, conc
    assert "# TYPE coderd_api_concurrent_requests gauge" in text
