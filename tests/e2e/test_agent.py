"""`coder agent` and the primary's agent tunnel (issue 3, parts 2-3): the agent dials out with
its token, the primary shows it connected, notices when it dies, and the agent comes back by
itself after the primary restarts. Bad settings are one clear line and a non-zero exit."""

import pytest

from harness import Api, wait_for


def _agent_status(stack, name):
    ws = stack.api.get(f"/api/v2/users/me/workspace/{name}").json()
    return ws["latest_build"]["resources"][0]["agents"][0]["status"]


def _agent(stack, token, name="agent"):
    """Not started: these tests watch it start, die and come back."""
    return stack.ctx.process(name, ["agent"], {"CODER_AGENT_URL": stack.primary.url,
                                               "CODER_AGENT_TOKEN": token})


def test_agent_connects_dies_and_returns(ctx):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    assert _agent_status(stack, "dev") == "connecting"
    agent = _agent(stack, token)
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent connected")
    assert "agent: connected to" in agent.stderr()

    # Killed without a goodbye: the primary sees the tunnel drop.
    assert agent.kill9() == -9
    wait_for(lambda: _agent_status(stack, "dev") == "disconnected", 5, 0.1,
             "agent disconnected")
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent back")

    # A graceful stop exits 0.
    assert agent.stop() == 0
    wait_for(lambda: _agent_status(stack, "dev") == "disconnected", 5, 0.1,
             "agent stopped")


def test_agent_survives_a_primary_restart(ctx):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    agent = _agent(stack, token)
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent connected")
    assert stack.primary.stop() == 0
    stack.primary.start()
    # The restarted primary holds no tunnel until the agent dials again (backoff from 50 ms).
    wait_for(lambda: "reconnecting" in agent.stderr(), 5, 0.1, "agent noticed")
    wait_for(lambda: agent.stderr().count("agent: connected to") >= 2, 10, 0.1,
             "agent reconnected")
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 5, 0.1, "status connected")
    assert agent.running()


def test_agent_with_a_wrong_token_keeps_trying(ctx):
    stack = ctx.stack()
    stack.create_workspace("dev")
    agent = _agent(stack, "00000000-0000-4000-8000-000000000000")
    agent.start()
    wait_for(lambda: "the agent token is not valid" in agent.stderr(), 5, 0.1, "401 logged")
    assert agent.running()
    assert _agent_status(stack, "dev") == "connecting"


def test_deleted_workspace_agent_is_refused(ctx):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    assert stack.client.run("delete", "dev", "-y").rc == 0
    agent = _agent(stack, token)
    agent.start()
    wait_for(lambda: "the agent token is not valid" in agent.stderr(), 5, 0.1, "401 logged")


@pytest.mark.parametrize("env,message", [
    ({}, "CODER_AGENT_URL must be set"),
    ({"CODER_AGENT_URL": "http://127.0.0.1:1"},
     "CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE must be set for token auth"),
    ({"CODER_AGENT_URL": "ftp://x", "CODER_AGENT_TOKEN": "t"}, "is not a valid http or https URL"),
    ({"CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN_FILE": "/nonexistent/token"},
     'read agent token file "/nonexistent/token"'),
    ({"CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "t",
      "CODER_AGENT_AUTH": "magic"}, 'invalid value "magic"'),
])
def test_agent_bad_settings(ctx, env, message):
    r = ctx.run(["agent"], env)
    assert r.rc == 1, r
    assert len(r.err_lines) == 1, r
    assert message in r.err_lines[0], r


def test_agent_token_file(ctx, tmp_path):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    f = tmp_path / "token"
    f.write_text(token + "\n")
    agent = stack.ctx.process("agent", ["agent"], {"CODER_AGENT_URL": stack.primary.url,
                                                   "CODER_AGENT_TOKEN_FILE": str(f)})
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent connected")


def test_deleting_the_workspace_closes_its_tunnel(ctx):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    agent = _agent(stack, token)
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent connected")
    assert stack.client.run("delete", "dev", "-y").rc == 0
    # The primary hangs up and will not take the agent back.
    wait_for(lambda: "tunnel refused with status 401" in agent.stderr(), 10, 0.1,
             "agent refused after delete")


def test_a_crashed_primary_does_not_show_stale_connections(ctx):
    stack = ctx.stack()
    token = stack.create_workspace("dev")
    agent = _agent(stack, token)
    agent.start()
    wait_for(lambda: _agent_status(stack, "dev") == "connected", 10, 0.1, "agent connected")
    assert stack.primary.kill9() == -9
    assert agent.kill9() == -9
    stack.primary.start()
    assert _agent_status(stack, "dev") == "disconnected"


# ---- proxies as regions -------------------------------------------------------------------


def _raw_upgrade(url_port, headers):
    """Sends a tunnel upgrade request to 127.0.0.1:port over plain HTTP; returns (status, body)."""
    import socket

    s = socket.create_connection(("127.0.0.1", url_port), timeout=5)
    req = ("GET /api/v2/workspaceagents/me/tunnel HTTP/1.1\r\nHost: x\r\n"
           "Connection: Upgrade\r\nUpgrade: coder-tunnel\r\nCoder-Tunnel-Version: 1\r\n")
    for k, v in headers.items():
        req += f"{k}: {v}\r\n"
    s.sendall((req + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_agent_tunnels_to_a_proxy_with_its_ticket(ctx):
    stack = ctx.stack(health_interval="1s")
    _, ptoken = stack.create_proxy("ny")
    proxy = stack.start_proxy(ptoken, name="ny", tls=False).start()
    stack.wait_status("ny", "ok")
    token = stack.create_workspace("dev")
    agent = _agent(stack, token)
    agent.start()
    # One tunnel to the primary, one to the proxy (after the first region poll).
    wait_for(lambda: "tunnel up" in proxy.proc.stderr(), 10, 0.1, "agent tunnel at the proxy")
    wait_for(lambda: agent.stderr().count("agent: connected to") >= 2, 5, 0.1, "both tunnels")
    assert f"connected to {proxy.url} (ny)" in agent.stderr()

    # The proxy restarts: the agent is back within a few seconds.
    assert proxy.stop() == 0
    proxy.start()
    wait_for(lambda: "tunnel up" in proxy.proc.stderr(), 10, 0.1, "agent back at the proxy")


def test_proxy_refuses_tunnels_without_a_valid_ticket(ctx):
    stack = ctx.stack(health_interval="1s")
    _, ptoken = stack.create_proxy("ny")
    proxy = stack.start_proxy(ptoken, name="ny", tls=False).start()
    stack.wait_status("ny", "ok")
    _, other_token = stack.create_proxy("other")
    stack.start_proxy(other_token, name="other", tls=False).start()  # tickets for another proxy
    stack.wait_status("other", "ok")
    token = stack.create_workspace("dev")
    regions = Api(stack.primary.url, token).get("/api/v2/workspaceagents/me/regions").json()
    tickets = {g["name"]: g.get("tunnel_ticket") for g in regions["regions"]}
    port = proxy.http_port
    # No ticket, garbage, a ticket for another proxy, a forged signature, the agent token.
    for headers in ({}, {"Coder-Tunnel-Ticket": "x.y.z"},
                    {"Coder-Tunnel-Ticket": tickets["other"]},
                    {"Coder-Tunnel-Ticket": tickets["ny"][:-4] + "AAAA"},
                    {"Coder-Session-Token": token}):
        status, data = _raw_upgrade(port, headers)
        assert status == 401, (headers, data)
        assert b"Invalid tunnel ticket." in data
    # The right one is accepted.
    status, data = _raw_upgrade(port, {"Coder-Tunnel-Ticket": tickets["ny"]})
    assert status == 101, data
    assert b"Upgrade: coder-tunnel" in data


def test_a_full_region_refuses_more_tunnels(ctx):
    """--max-agent-tunnels 1: a second agent hears 429 and keeps trying; once the first leaves,
    the second gets in."""
    stack = ctx.stack(extra_args=["--max-agent-tunnels", "1"])
    one = _agent(stack, stack.create_workspace("one"), "agent-one")
    one.start()
    wait_for(lambda: _agent_status(stack, "one") == "connected", 10, 0.1, "first agent")
    two = _agent(stack, stack.create_workspace("two"), "agent-two")
    two.start()
    wait_for(lambda: "status 429: Too many tunnels." in two.stderr(), 10, 0.1, "429")
    assert _agent_status(stack, "two") == "connecting"
    assert one.stop() == 0
    wait_for(lambda: _agent_status(stack, "two") == "connected", 40, 0.2, "second agent in")
    r = ctx.run(["server", "--max-agent-tunnels", "0"])
    assert r.rc != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "error: --max-agent-tunnels must be between 1 and 1000000")


@pytest.mark.parametrize("args,message", [
    (["--proxy-trusted-origins", "10.0.0.1", "--proxy-trusted-headers", "X-Forwarded-For"],
     "error: parse proxy trusted origins: invalid CIDR address: 10.0.0.1"),
    (["--max-agent-tunnels", "-1"], "error: --max-agent-tunnels must be between 1 and 1000000"),
])
def test_region_options_are_checked(ctx, args, message):
    """Both regions take these options; a bad value is one line and a non-zero exit."""
    r = ctx.run(["server", *args])
    assert r.rc != 0 and r.stderr.strip().splitlines()[-1] == message
    r = ctx.run(["wsproxy", "server", "--primary-access-url", "http://127.0.0.1:1",
                 "--proxy-session-token", "x", *args])
    assert r.rc != 0 and r.stderr.strip().splitlines()[-1] == message


def test_tunnels_count_as_websockets_in_the_metrics(ctx):
    """coderd_api_concurrent_websockets{path} counts upgraded connections (here the agent's
    tunnel) at the proxy and the primary while they live; websocket_durations_seconds records
    each when it ends (CODER-COMPAT §8)."""
    from harness import metric_samples

    stack = ctx.stack(prometheus=True)
    _, ptoken = stack.create_proxy("wsm")
    proxy = stack.start_proxy(ptoken, name="wsm", prometheus=True, tls=False).start()
    stack.wait_status("wsm", "ok")
    token = stack.create_workspace("wsm-dev")
    agent = stack.start_agent(token, region="wsm")
    path = "/api/v2/workspaceagents/me/tunnel"

    def gauge(text):
        return {lbl.get("path"): v for lbl, v in
                metric_samples(text, "coderd_api_concurrent_websockets")}

    def count(text):
        return {lbl.get("path"): v for lbl, v in
                metric_samples(text, "coderd_api_websocket_durations_seconds_count")}

    wait_for(lambda: gauge(proxy.metrics()).get(path) == 1, 5, 0.1, "proxy counts the tunnel")
    wait_for(lambda: gauge(stack.primary.metrics()).get(path) == 1, 5, 0.1,
             "primary counts the tunnel")
    assert agent.stop() == 0
    wait_for(lambda: gauge(proxy.metrics()).get(path) == 0, 5, 0.1, "proxy: tunnel gone")
    text = proxy.metrics()
    assert "# TYPE coderd_api_websocket_durations_seconds histogram" in text
    assert count(text).get(path, 0) >= 1
    assert proxy.stop() == 0
