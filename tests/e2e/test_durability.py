"""The primary's store survives a restart and a kill -9 in the middle of writes."""

import sqlite3
import threading

import requests

import harness
from harness import wait_for


def test_restart_loses_nothing(ctx):
    stack = ctx.stack(health_interval="1s")
    primary = stack.primary
    r = stack.api.post("/api/v2/users", json={
        "email": "member@example.com", "username": "member1",
        "password": "MemberPassword!23", "login_type": "password"})
    assert r.status_code == 201, r.text
    member_id = r.json()["id"]
    _, token = stack.create_proxy("durable", display_name="Durable", icon="/emojis/1f5fa.png")
    _, idle_token = stack.create_proxy("idle")
    proxy = stack.start_proxy(token, name="durable").start()
    stack.wait_status("durable", "ok")
    before = stack.snapshot()
    me_before = stack.api.get("/api/v2/users/me").json()

    assert primary.stop() == 0, primary.proc.tail()
    assert primary.db_path.exists()

    # The proxy keeps serving while the primary is away, and says what is wrong.
    assert proxy.proc.running()
    assert proxy.healthz_ok()

    def report_says_primary_down():
        r = harness.http_get(proxy.https_url + "/healthz-report", verify=ctx.certs.ca)
        errs = r.json()["errors"]
        return r.status_code == 200 and any("failed to get build info" in e for e in errs)

    wait_for(report_says_primary_down, 10, 0.2, "proxy /healthz-report names the primary")

    primary.start()  # same command, same config dir, same port
    assert f"Started HTTP listener at http://127.0.0.1:{primary.port}" in primary.proc.stdout()

    # The CLI session (API key) and the users survived.
    me = stack.api.get("/api/v2/users/me")
    assert me.status_code == 200, me.text
    assert me.json()["id"] == me_before["id"]
    assert [x["name"] for x in me.json()["roles"]] == ["owner"]
    r = primary.api().post("/api/v2/users/login", json={"email": "member@example.com",
                                                        "password": "MemberPassword!23"})
    assert r.status_code == 201, r.text
    member = primary.api(r.json()["session_token"]).get("/api/v2/users/me").json()
    assert member["id"] == member_id
    r = stack.client.run("wsproxy", "ls", "-o", "json")
    assert r.rc == 0, r

    # Proxies and their tokens survived; the running proxy comes back to ok by itself.
    assert stack.snapshot() == before
    stack.wait_status("durable", "ok", timeout=15)
    assert stack.status("idle") == "unregistered"
    idle = stack.start_proxy(idle_token, name="idle").start()
    stack.wait_status("idle", "ok")
    idle.stop()
    proxy.stop()


def test_kill9_during_writes_loses_no_committed_row(ctx):
    stack = ctx.stack(health_interval="1s")
    primary = stack.primary
    token = stack.client.token()
    committed = []  # (name, id) of every create that got 201
    lock = threading.Lock()
    stop = threading.Event()

    def writer(prefix):
        api = harness.Api(primary.url, token=token, verify=ctx.certs.ca, timeout=5)
        i = 0
        while not stop.is_set():
            name = f"{prefix}{i}"
            i += 1
            try:
                r = api.post("/api/v2/workspaceproxies",
                             json={"name": name, "display_name": name.upper(),
                                   "icon": "/emojis/1f5fa.png"})
            except requests.RequestException:
                return  # the primary is gone
            if r.status_code != 201:
                return
            with lock:
                committed.append((name, r.json()["proxy"]["id"]))

    threads = [threading.Thread(target=writer, args=(p,), daemon=True) for p in ("a", "b")]
    for t in threads:
        t.start()
    wait_for(lambda: len(committed) >= 30, 15, 0.01, "30 proxies created")
    assert primary.kill9() == -9
    stop.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive()
    with lock:
        recorded = list(committed)

    primary.start()  # the same command; no manual recovery
    listed = {p["name"]: p for p in stack.proxies()}
    missing = [(n, i) for n, i in recorded if n not in listed or listed[n]["id"] != i]
    assert not missing, f"{len(missing)} committed proxies lost: {missing[:5]}"
    for n, _ in recorded:
        assert listed[n]["display_name"] == n.upper()
        assert listed[n]["status"]["status"] == "unregistered"
    # Names are still unique after recovery; the store accepts new writes.
    r = stack.api.post("/api/v2/workspaceproxies",
                       json={"name": recorded[0][0], "display_name": "x", "icon": "/emojis/1.png"})
    assert r.status_code == 409, r.text
    stack.create_proxy("after-crash")

    assert primary.stop() == 0
    db = sqlite3.connect(str(primary.db_path))  # the primary is stopped
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
