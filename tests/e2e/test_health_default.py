"""Proxy health with the primary's default settings (--proxy-health-interval 1m): what must be
true without waiting for the periodic check."""


def test_restarted_proxy_is_checked_at_once(mctx):
    """With the default 1-minute interval: a proxy that was `ok`, dies, and comes back within
    seconds at an address where something else answers is checked when it registers again (a
    new replica), not a minute later: `unhealthy` at once, not a stale `ok`."""
    stack = mctx.stack()  # --proxy-health-interval 1m
    _, token = stack.create_proxy("moved")
    proxy = stack.start_proxy(token, name="moved").start()
    stack.wait_status("moved", "ok", timeout=5)
    proxy.kill9()
    web = stack.ctx.fake_web_server()
    stack.start_proxy(token, name="moved-again", access_url=web.url).start()
    p = stack.wait_status("moved", "unhealthy", timeout=5)
    assert any("is not a coder proxy instance" in e for e in p["status"]["report"]["errors"]), p
