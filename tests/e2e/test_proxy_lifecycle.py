"""A running proxy and its primary over time: the re-register loop survives a primary restart,
stops the proxy when its token is revoked, and gives up with a clear message after 10 failures
in a row. The hidden --proxy-reregister-interval shortens Coder's 5 s period so that these take
seconds, not a minute."""

import time

from harness import wait_for

FAST = {"CODER_PROXY_REREGISTER_INTERVAL": "200ms"}


def test_proxy_exits_when_it_is_deleted(ctx):
    stack = ctx.stack(health_interval="1s")
    _, token = stack.create_proxy("doomed")
    p = stack.start_proxy(token, name="doomed", extra_env=FAST).start()
    stack.wait_status("doomed", "ok")
    r = stack.client.run("wsproxy", "delete", "doomed", "-y")
    assert r.rc == 0, r
    rc, err = p.expect_exit(5)
    assert rc == 1, p.proc.tail()
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "the primary rejected this proxy's token" in last, err
    assert "Proxy has been deleted." in last, err


def test_proxy_survives_a_primary_restart(ctx):
    stack = ctx.stack(health_interval="1s")
    _, token = stack.create_proxy("steady")
    p = stack.start_proxy(token, name="steady", extra_env=FAST).start()
    stack.wait_status("steady", "ok")
    assert stack.primary.stop() == 0
    # A few re-registers fail (not 10: 200 ms x 10 = 2 s), then the primary is back.
    wait_for(lambda: "re-register with the primary failed (2/10)" in p.proc.stderr(), 5, 0.05,
             "two failed re-registers logged")
    stack.primary.start()
    wait_for(lambda: "re-registered with the primary after" in p.proc.stderr(), 5, 0.05,
             "re-registered after the restart")
    assert p.proc.running()
    stack.wait_status("steady", "ok")


def test_proxy_gives_up_after_10_failed_reregisters(ctx):
    stack = ctx.stack(health_interval="1s")
    _, token = stack.create_proxy("orphan")
    p = stack.start_proxy(token, name="orphan", extra_env=FAST).start()
    stack.wait_status("orphan", "ok")
    assert stack.primary.stop() == 0
    t0 = time.monotonic()
    rc, err = p.expect_exit(10)
    took = time.monotonic() - t0
    assert rc == 1, p.proc.tail()
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "failed to re-register with the primary 10 times in a row" in last, err
    # Ten periods of 200 ms, give or take: not at the first failure.
    assert took >= 1.5, took
    for i in range(1, 10):
        assert f"re-register with the primary failed ({i}/10)" in err, err


def test_bad_reregister_interval_is_refused(ctx):
    stack = ctx.stack()
    _, token = stack.create_proxy("eager")
    p = stack.start_proxy(token, name="eager",
                          extra_env={"CODER_PROXY_REREGISTER_INTERVAL": "1ms"})
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc == 1
    assert "--proxy-reregister-interval must be between 100ms and 1m0s" in err, err


def test_sigint_deregisters_and_exits_cleanly(ctx):
    """Ctrl-C (SIGINT), like SIGTERM: deregister (unreachable at once, with the reason), exit 0."""
    import signal

    stack = ctx.stack()  # default 1-minute health interval: only deregistration can tell
    _, token = stack.create_proxy("ctrlc")
    p = stack.start_proxy(token, name="ctrlc").start()
    stack.wait_status("ctrlc", "ok")
    p.proc.signal(signal.SIGINT)
    rc, err = p.expect_exit(5)
    assert rc == 0, err
    assert "deregistered from the primary" in err, err
    proxy = stack.wait_status("ctrlc", "unreachable", timeout=2)
    assert any("deregistered" in e for e in proxy["status"]["report"]["errors"]), proxy


def test_disable_path_apps(ctx):
    """--disable-path-apps: a path app at this proxy is refused with Coder's reason (403)."""
    from harness import OWNER_USERNAME, http_get

    stack = ctx.stack()
    _, token = stack.create_proxy("nopath")
    p = stack.start_proxy(token, name="nopath", extra_args=["--disable-path-apps"]).start()
    stack.wait_status("nopath", "ok")
    r = http_get(f"{p.url}/@{OWNER_USERNAME}/ws/apps/site/", verify=str(ctx.certs.ca),
                 headers={"Coder-Session-Token": stack.client.token()})
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert "Path-based applications are disabled on this workspace proxy" in r.text
    assert p.stop() == 0
