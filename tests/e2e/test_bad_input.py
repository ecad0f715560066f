"""Every bad input gets a clear error and changes nothing that is stored.

"Nothing changed" = the stable fields of GET /api/v2/workspaceproxies (ids, names, display
names, icons, URLs, wildcard, DERP flags, deleted, timestamps) are the same before and after,
and so are the rows of the primary's store that a request could write: every column of
workspace_proxies (token hashes and updated_at included), users, api_keys, replicas and
site_configs (harness.store_snapshot; it leaves out only what authenticating a session stamps).
A CLI error is exactly one non-empty line on stderr, nothing on stdout, and exit code != 0.
"""

import json
import os

import pytest

import harness
from harness import PROXY_TOKEN_RE, strip_ansi

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
RESERVED = 'The name "primary" is reserved for the primary region.'
BAD_ICON = "icon must be a relative path to an emoji or a publicly hosted image URL"
NOT_LOGGED_IN = "You are not logged in. Try logging in using 'coder login <url>'."
# Coder's httpapi.Read answers every body that does not decode into the request, a field of the
# wrong type included, with this message.
BAD_JSON = "Request body must be valid JSON."
TOO_LARGE = "Request body too large."
HEADERS_TOO_LARGE = "Request header fields too large."
PRIMARY_RENAME = ("Cannot update name of default primary proxy, did you mean to update the "
                  "'display name'?")


@pytest.fixture(scope="module")
def stack(mctx):
    s = mctx.stack(health_interval="1s")
    s.create_proxy("newyork", display_name="USA East", icon="/emojis/2194.png")
    s.create_proxy("other", display_name="Other", icon="/emojis/1f5fa.png")
    return s


@pytest.fixture(scope="module")
def proxy_token(stack):
    """The token of a proxy that is never started, for the /me endpoints."""
    _, token = stack.create_proxy("tokenholder")
    return token


def stored(stack):
    return {"api": stack.snapshot(), **harness.store_snapshot(stack.primary.db_path)}


@pytest.fixture
def unchanged(stack):
    """Asserts at teardown that nothing stored changed during the test (see the module doc).
    Tests that change things on purpose call unchanged.reset() afterwards."""

    class Guard:
        def __init__(self):
            self.before = stored(stack)

        def reset(self):
            self.before = stored(stack)

        def check(self):
            after = stored(stack)
            changed = {k: {"before": v, "after": after.get(k)}
                       for k, v in self.before.items() if after.get(k) != v}
            assert not changed, f"stored {sorted(changed)} changed: {changed}"

    g = Guard()
    yield g
    g.check()


def token_hash(stack, name):
    """workspace_proxies.token_hashed_secret of the live proxy `name`."""
    rows = [r for r in harness.store_snapshot(stack.primary.db_path)["workspace_proxies"]
            if r["name"] == name and not r["deleted"]]
    assert len(rows) == 1, rows
    return rows[0]["token_hashed_secret"]


def cli_error(r, *needles):
    """A CLI error: exit != 0, nothing on stdout, exactly one non-empty stderr line."""
    assert r.rc != 0, r
    assert r.rc > 0, f"killed by a signal: {r}"
    assert strip_ansi(r.stdout).strip() == "", r
    assert len(r.err_lines) == 1, f"expected exactly one non-empty stderr line: {r}"
    for n in needles:
        assert n in r.err_lines[0], (n, r)
    return r.err_lines[0]


def api_error(r, status, message=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", r.headers
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    return body


def create_args(name, icon="/emojis/1f5fa.png"):
    return ("wsproxy", "create", f"--name={name}", f"--display-name={name}", f"--icon={icon}")


# --------------------------------------------------------------------------------------------
# Admin API and CLI


def test_duplicate_name(stack, unchanged):
    msg = 'Workspace proxy with name "newyork" already exists.'
    r = stack.api.post("/api/v2/workspaceproxies",
                       json={"name": "newyork", "display_name": "x", "icon": "/emojis/1.png"})
    api_error(r, 409, msg)
    cli_error(stack.client.run(*create_args("newyork")), msg)


@pytest.mark.parametrize("name", ["primary", "PRIMARY", "Primary"])
def test_reserved_name(stack, unchanged, name):
    r = stack.api.post("/api/v2/workspaceproxies",
                       json={"name": name, "display_name": "x", "icon": "/emojis/1.png"})
    api_error(r, 400, RESERVED)
    cli_error(stack.client.run(*create_args(name)), RESERVED)
    # Renaming to it is refused too.
    r = stack.api.patch("/api/v2/workspaceproxies/other", json={"name": name})
    api_error(r, 400, RESERVED)


@pytest.mark.parametrize("name", ["", "bad name!", "trailing-", "-leading", "double--dash",
                                  "x" * 33])
def test_invalid_name(stack, unchanged, name):
    r = stack.api.post("/api/v2/workspaceproxies",
                       json={"name": name, "display_name": "x", "icon": "/emojis/1.png"})
    api_error(r, 400)
    if name:
        cli_error(stack.client.run(*create_args(name)))


def test_bad_icon(stack, unchanged):
    cli_error(stack.client.run("wsproxy", "create", "--name=iconic", "--display-name=Iconic",
                               "--icon", "foo.png"), BAD_ICON)
    r = stack.api.post("/api/v2/workspaceproxies",
                       json={"name": "iconic", "display_name": "Iconic", "icon": "foo.png"})
    api_error(r, 400, BAD_ICON)
    r = stack.api.patch("/api/v2/workspaceproxies/newyork", json={"icon": "foo.png"})
    api_error(r, 400, BAD_ICON)
    cli_error(stack.client.run("wsproxy", "edit", "newyork", "--icon", "foo.png"), BAD_ICON)


# The primary region's display name and icon are checked as a proxy's are, and a refused patch
# stores neither field (site_configs is in the guard's snapshot).
@pytest.mark.parametrize("body,message", [
    ({"icon": "foo.png"}, BAD_ICON),
    ({"display_name": "Home", "icon": "foo.png"}, BAD_ICON),
    ({"icon": "/emojis/" + "x" * 260 + ".png"}, BAD_ICON),
    ({"display_name": "x" * 65}, "Validation failed."),
    ({"display_name": "x" * 65, "icon": "/emojis/1f3e0.png"}, "Validation failed."),
    ({"name": "home"}, PRIMARY_RENAME),
    ({"name": "home", "display_name": "Home", "regenerate_token": True}, PRIMARY_RENAME),
    ({}, "No update arguments provided. Nothing to do."),
    ({"display_name": "", "icon": ""}, "No update arguments provided. Nothing to do."),
    ({"regenerate_token": True}, "No update arguments provided. Nothing to do."),
])
def test_primary_patch_refused(stack, unchanged, body, message):
    for ref in ("primary", stack.proxies()[0]["id"]):  # by name and by the deployment id
        r = api_error(stack.api.patch(f"/api/v2/workspaceproxies/{ref}", json=body), 400,
                      message)
        if message == PRIMARY_RENAME:
            assert r["validations"] == [{"field": "name", "detail":
                                         "Cannot update name of default primary proxy"}], r
    primary = stack.api.get("/api/v2/workspaceproxies/primary").json()
    assert (primary["name"], primary["display_name"]) == ("primary", "Default"), primary


def test_primary_edit_refused_by_the_cli(stack, unchanged):
    cli_error(stack.client.run("wsproxy", "edit", "primary", "--icon", "foo.png"), BAD_ICON)
    cli_error(stack.client.run("wsproxy", "edit", "primary", "--name", "home"), PRIMARY_RENAME)


# body -> the message, for any endpoint. Coder says BAD_JSON for "[]" too: it does not decode
# into its request struct.
MALFORMED = [
    (b"{not json", BAD_JSON),
    (b"", BAD_JSON),
    (b"\xff\xfe\x00", BAD_JSON),
    (b'{"name": "ok-name"', BAD_JSON),
    (b'{"name": "ok-name"} trailing', BAD_JSON),
    (b'{"name": "ok-name", "name": "twice"}', BAD_JSON),
    (b'"name"', BAD_JSON),
    (b"[]", BAD_JSON),  # JSON, but not an object: Coder's decoder fails the same way
]
# Fields of the wrong type do not decode either.
WRONG_TYPES = [
    (b'{"name": 5}', BAD_JSON),
    (b'{"name": "ok-name", "icon": ["x"]}', BAD_JSON),
    (b'{"display_name": {"x": 1}}', BAD_JSON),
]


@pytest.mark.parametrize("body,message", MALFORMED + WRONG_TYPES)
def test_malformed_json(stack, unchanged, body, message):
    hdrs = {"Content-Type": "application/json"}
    api_error(stack.api.post("/api/v2/workspaceproxies", data=body, headers=hdrs), 400, message)
    for ref in ("newyork", "primary"):
        api_error(stack.api.patch(f"/api/v2/workspaceproxies/{ref}", data=body, headers=hdrs),
                  400, message)


def test_wrong_type_of_regenerate_token(stack, unchanged):
    before = token_hash(stack, "newyork")
    for value in ("yes", 1, [True]):
        api_error(stack.api.patch("/api/v2/workspaceproxies/newyork",
                                  json={"regenerate_token": value}), 400, BAD_JSON)
    assert token_hash(stack, "newyork") == before


@pytest.mark.parametrize("body,message", MALFORMED + [
    (b'{"email": 5, "password": "SomeSecurePassword!1"}', BAD_JSON),
    (b'{"email": "admin@example.com", "password": ["SomeSecurePassword!1"]}', BAD_JSON),
])
def test_malformed_json_on_login(stack, unchanged, body, message):
    r = stack.primary.api().post("/api/v2/users/login", data=body,
                                 headers={"Content-Type": "application/json"})
    api_error(r, 400, message)
    assert "set-cookie" not in {k.lower() for k in r.headers}, r.headers


@pytest.mark.parametrize("body,message", MALFORMED + [
    (b'{"email": "x@example.com", "username": "x", "password": "SomeSecurePassword!1", '
     b'"name": 5}', BAD_JSON),
    (b'{"email": ["x@example.com"]}', BAD_JSON),
])
def test_malformed_json_on_first_user(stack, unchanged, body, message):
    # The body is read before the "already created" check, as in Coder.
    r = stack.primary.api().post("/api/v2/users/first", data=body,
                                 headers={"Content-Type": "application/json"})
    api_error(r, 400, message)


REPLICA = harness.new_uuid().encode()


@pytest.mark.parametrize("body,message", MALFORMED + [
    (b'{"access_url": "http://127.0.0.1:1", "replica_id": "' + REPLICA +
     b'", "derp_enabled": "yes"}', BAD_JSON),
    (b'{"access_url": "http://127.0.0.1:1", "replica_id": "' + REPLICA +
     b'", "derp_only": 1}', BAD_JSON),
    (b'{"access_url": ["http://127.0.0.1:1"], "replica_id": "' + REPLICA + b'"}', BAD_JSON),
    (b'{"access_url": "http://127.0.0.1:1", "replica_id": 7}', BAD_JSON),
])
def test_malformed_json_on_register(stack, unchanged, proxy_token, body, message):
    r = stack.primary.api().post("/api/v2/workspaceproxies/me/register", data=body,
                                 headers={"Content-Type": "application/json",
                                          "Coder-External-Proxy-Token": proxy_token})
    api_error(r, 400, message)
    assert stack.status("tokenholder") == "unregistered"


def _auth_head(stack, method, path, extra):
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.primary.port}\r\n"
            f"Coder-Session-Token: {stack.client.token()}\r\nContent-Type: application/json\r\n"
            f"{extra}\r\n")


def _json_body(body):
    assert body, "empty error body"
    return json.loads(body)


def test_body_over_1mib(stack, unchanged):
    size = (1 << 20) + 1
    payload = b'{"name": "big", "display_name": "' + b"x" * size + b'"}'
    chunks = [payload[i:i + 65536] for i in range(0, len(payload), 65536)]

    head = _auth_head(stack, "POST", "/api/v2/workspaceproxies",
                      f"Content-Length: {len(payload)}\r\n")
    st, hdrs, body = harness.raw_http(stack.primary.port, head, chunks)
    assert st == 413, (st, body[:200])
    assert hdrs.get("content-type", "").startswith("application/json")
    assert _json_body(body)["message"] == TOO_LARGE

    head = _auth_head(stack, "POST", "/api/v2/workspaceproxies",
                      "Transfer-Encoding: chunked\r\n")
    chunked = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
    st, hdrs, body = harness.raw_http(stack.primary.port, head, chunked)
    assert st == 413, (st, body[:200])
    assert _json_body(body)["message"] == TOO_LARGE

    # A body of exactly 1 MiB is not refused for its size (the name is invalid -> 400).
    pad = (1 << 20) - len(b'{"name": "bad name!", "display_name": ""}')
    ok_size = b'{"name": "bad name!", "display_name": "' + b"y" * pad + b'"}'
    assert len(ok_size) == 1 << 20
    r = stack.api.post("/api/v2/workspaceproxies", data=ok_size,
                       headers={"Content-Type": "application/json"})
    api_error(r, 400)
    assert stack.primary.healthz_ok()


def test_headers_over_64kib(stack, unchanged):
    big = "a" * (70 * 1024)
    st, hdrs, body = harness.raw_http(
        stack.primary.port, _auth_head(stack, "GET", "/api/v2/workspaceproxies",
                                       f"X-Big: {big}\r\n"))
    assert st == 431, (st, body[:200])
    assert hdrs.get("content-type", "").startswith("application/json")
    assert _json_body(body)["message"] == HEADERS_TOO_LARGE
    many = "".join(f"X-H{i}: {'v' * 30}\r\n" for i in range(2500))  # ~100 KiB in small headers
    st, _, body = harness.raw_http(
        stack.primary.port, _auth_head(stack, "GET", "/api/v2/workspaceproxies", many))
    assert st == 431, (st, body[:200])
    assert _json_body(body)["message"] == "Too many request headers."
    assert stack.primary.healthz_ok()


def test_member_is_forbidden(stack, unchanged):
    r = stack.api.post("/api/v2/users", json={
        "email": "member@example.com", "username": "member1",
        "password": "MemberPassword!23", "login_type": "password"})
    assert r.status_code == 201, r.text
    r = stack.primary.api().post("/api/v2/users/login", json={
        "email": "member@example.com", "password": "MemberPassword!23"})
    assert r.status_code == 201, r.text
    member = stack.primary.api(r.json()["session_token"])
    me = member.get("/api/v2/users/me").json()
    assert me["username"] == "member1" and me["roles"] == []
    unchanged.reset()  # the member and their session key exist now
    ny_hash = token_hash(stack, "newyork")

    api_error(member.post("/api/v2/workspaceproxies",
                          json={"name": "sneaky", "display_name": "x", "icon": "/emojis/1.png"}),
              403)
    api_error(member.patch("/api/v2/workspaceproxies/newyork", json={"display_name": "pwned"}),
              403)
    api_error(member.patch("/api/v2/workspaceproxies/newyork",
                           json={"name": "newyork", "regenerate_token": True}), 403)
    api_error(member.patch("/api/v2/workspaceproxies/newyork", json={"regenerate_token": True}),
              403)
    api_error(member.patch("/api/v2/workspaceproxies/primary", json={"display_name": "pwned"}),
              403)
    api_error(member.delete("/api/v2/workspaceproxies/newyork"), 403)
    assert token_hash(stack, "newyork") == ny_hash
    # Any logged-in user may read the regions.
    r = member.get("/api/v2/regions")
    assert r.status_code == 200 and r.json()["regions"][0]["name"] == "primary"


def test_unauthenticated(stack, unchanged):
    anon = stack.primary.api()
    for method, path in (("GET", "/api/v2/workspaceproxies"),
                         ("POST", "/api/v2/workspaceproxies"),
                         ("PATCH", "/api/v2/workspaceproxies/newyork"),
                         ("DELETE", "/api/v2/workspaceproxies/newyork"),
                         ("GET", "/api/v2/regions"), ("GET", "/api/v2/users/me")):
        r = anon.request(method, path, json={"name": "anon", "display_name": "x"})
        api_error(r, 401, SIGNED_OUT)
    for token in ("garbage", "abcdefghij-abcdefghijklmnopqrstuv", "short-x"):
        r = stack.primary.api(token).post("/api/v2/workspaceproxies", json={"name": "anon"})
        api_error(r, 401, SIGNED_OUT)


def test_rename_to_existing_name(stack, unchanged):
    msg = 'Workspace proxy with name "newyork" already exists.'
    api_error(stack.api.patch("/api/v2/workspaceproxies/other", json={"name": "newyork"}), 409,
              msg)
    cli_error(stack.client.run("wsproxy", "edit", "other", "--name", "newyork"), msg)
    api_error(stack.api.patch("/api/v2/workspaceproxies/other", json={"name": "NewYork"}), 409,
              'Workspace proxy with name "NewYork" already exists.')


# A patch that is refused keeps the token: it is checked before a new one is made, and the new
# hash is stored only together with the rest of the patch.
@pytest.mark.parametrize("body,status,message", [
    ({"name": "newyork", "regenerate_token": True}, 409,
     'Workspace proxy with name "newyork" already exists.'),
    ({"icon": "bad.png", "regenerate_token": True}, 400, BAD_ICON),
    ({"display_name": "x" * 65, "regenerate_token": True}, 400, "Validation failed."),
    ({"name": "bad name!", "regenerate_token": True}, 400, "Validation failed."),
    ({"name": "primary", "regenerate_token": True}, 400, RESERVED),
    ({"name": 5, "regenerate_token": True}, 400, BAD_JSON),
])
def test_refused_patch_keeps_the_token(stack, unchanged, body, status, message):
    before = token_hash(stack, "other")
    r = api_error(stack.api.patch("/api/v2/workspaceproxies/other", json=body), status, message)
    assert "proxy_token" not in r, r
    assert token_hash(stack, "other") == before


def test_delete_primary(stack, unchanged):
    api_error(stack.api.delete("/api/v2/workspaceproxies/primary"), 400,
              "Cannot delete primary proxy")
    cli_error(stack.client.run("wsproxy", "delete", "primary", "-y"),
              "Cannot delete primary proxy")


def test_edit_without_fields(stack, unchanged):
    cli_error(stack.client.run("wsproxy", "edit", "newyork"),
              "specify at least one field to update")


def test_unknown_proxy(stack, unchanged):
    api_error(stack.api.delete("/api/v2/workspaceproxies/nope"), 404)
    api_error(stack.api.get("/api/v2/workspaceproxies/nope"), 404)
    api_error(stack.api.patch("/api/v2/workspaceproxies/nope", json={"display_name": "x"}), 404)
    for args in (("wsproxy", "delete", "nope", "-y"),
                 ("wsproxy", "edit", "nope", "--display-name", "x"),
                 ("wsproxy", "regenerate-token", "nope")):
        line = cli_error(stack.client.run(*args))
        assert "nope" in line or "not found" in line.lower(), line


def test_cli_usage_errors(stack, unchanged):
    cli_error(stack.client.run("wsproxy", "delete", "-y"))          # missing argument
    cli_error(stack.client.run("wsproxy", "ls", "--no-such-flag"))  # unknown flag
    cli_error(stack.client.run("wsproxy", "no-such-command"))


def test_not_logged_in(stack, unchanged, tmp_path):
    fresh = stack.ctx.client(config_dir=tmp_path / "nobody")
    cli_error(fresh.run("wsproxy", "ls"), NOT_LOGGED_IN)
    cli_error(fresh.run(*create_args("ghost")), NOT_LOGGED_IN)


def test_cli_with_revoked_session(stack, unchanged, tmp_path):
    # A session file whose token the server does not know: one line, exit != 0.
    cfg = tmp_path / "revoked"
    cfg.mkdir()
    (cfg / "url").write_text(stack.primary.url)
    (cfg / "session").write_text("abcdefghij-abcdefghijklmnopqrstuv")
    os.chmod(cfg / "session", 0o600)
    line = cli_error(stack.ctx.client(config_dir=cfg).run("wsproxy", "ls"))
    assert SIGNED_OUT in line or "coder login" in line, line


# --------------------------------------------------------------------------------------------
# Proxy server start-up with bad settings


def _expect_fail(stack, token, needles, timeout=10.0, **kw):
    p = stack.start_proxy(token, **kw)
    p.start(wait=False)
    rc, err = p.expect_exit(timeout)
    err = strip_ansi(err)
    assert rc > 0, (rc, err)
    for n in needles:
        assert n in err, (n, err)
    return err


def test_proxy_bad_tokens(stack, unchanged):
    ny = stack.proxy("newyork")
    cases = [
        ("garbage", ["Invalid external proxy token"]),
        (f"{ny['id']}:{'ab' * 32}", ["Invalid external proxy token",
                                     "Invalid proxy token secret."]),
        (f"{harness.new_uuid()}:{'cd' * 32}", ["Invalid external proxy token",
                                               "Proxy not found."]),
    ]
    for token, needles in cases:
        _expect_fail(stack, token, needles, name="newyork")
    assert stack.status("newyork") == "unregistered"


def test_proxy_token_of_deleted_proxy(stack, unchanged):
    doomed, token = stack.create_proxy("doomed")
    r = stack.client.run("wsproxy", "delete", "doomed", "-y")
    assert r.rc == 0, r
    unchanged.reset()
    _expect_fail(stack, token, ["Invalid external proxy token", "Proxy has been deleted."],
                 name="doomed")
    assert stack.proxy("doomed") is None


def test_proxy_missing_settings(stack, unchanged):
    _, token = stack.create_proxy("incomplete")
    unchanged.reset()
    _expect_fail(stack, token, ["proxy-session-token"], name="incomplete",
                 extra_env={"CODER_PROXY_SESSION_TOKEN": None})
    _expect_fail(stack, token, ["primary-access-url"], name="incomplete",
                 extra_env={"CODER_PRIMARY_ACCESS_URL": None})
    _expect_fail(stack, token, ["'--primary-access-url' value must be http or https"],
                 name="incomplete", extra_env={"CODER_PRIMARY_ACCESS_URL": "ftp://127.0.0.1:1"})
    assert stack.status("incomplete") == "unregistered"


def test_primary_url_is_another_proxy(stack, unchanged):
    _, token = stack.create_proxy("legit")
    legit = stack.start_proxy(token, name="legit").start()
    stack.wait_status("legit", "ok")
    _, token2 = stack.create_proxy("confused")
    unchanged.reset()
    p = stack.ctx.wsproxy(legit.http_url, token2, name="confused")
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc > 0, (rc, err)
    assert "is a workspace proxy, not a primary coderd instance" in strip_ansi(err), err
    assert legit.http_url in err, err
    assert stack.status("confused") == "unregistered"
    legit.stop()
    unchanged.reset()


def test_primary_url_is_a_plain_web_server(stack, unchanged):
    web = stack.ctx.fake_web_server()
    _, token = stack.create_proxy("lost")
    unchanged.reset()
    p = stack.ctx.wsproxy(web.url, token, name="lost")
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc > 0 and "Are you sure" in strip_ansi(err), (rc, err)
    # Nothing listening at all: same kind of error, no hang.
    p = stack.ctx.wsproxy(f"http://127.0.0.1:{harness.free_port()}", token, name="lost")
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc > 0 and "Are you sure" in strip_ansi(err), (rc, err)
    assert stack.status("lost") == "unregistered"


def test_bad_wildcard(stack, unchanged):
    _, token = stack.create_proxy("wild")
    unchanged.reset()
    for pattern in ("foo", "*", "foo.*.example.com", "https://*.example.com"):
        _expect_fail(stack, token, ["Wildcard URL is invalid."], name="wild",
                     extra_env={"CODER_WILDCARD_ACCESS_URL": pattern})
    assert stack.status("wild") == "unregistered"


def test_bad_access_url(stack, unchanged):
    _, token = stack.create_proxy("badurl")
    unchanged.reset()
    _expect_fail(stack, token, ["URL is invalid."], name="badurl",
                 extra_env={"CODER_ACCESS_URL": "https://127.0.0.1:1/some/path"})
    assert stack.status("badurl") == "unregistered"


# --------------------------------------------------------------------------------------------
# Token regeneration


def test_regenerate_token_invalidates_the_old_one(stack):
    _, old = stack.create_proxy("regen")
    p = stack.start_proxy(old, name="regen").start()
    stack.wait_status("regen", "ok")
    assert p.stop() == 0

    r = stack.client.run("wsproxy", "regenerate-token", "regen")
    assert r.rc == 0, r
    tokens = [ln.split("Token: ", 1)[1].strip() for ln in r.out_lines if "Token: " in ln]
    assert len(tokens) == 1, r
    new = tokens[0]
    assert PROXY_TOKEN_RE.match(new) and new.split(":")[0] == old.split(":")[0] and new != old
    assert 'Workspace Proxy "regen" updated successfully.' in r.stdout

    _expect_fail(stack, old, ["Invalid external proxy token"], name="regen")
    p = stack.start_proxy(new, name="regen").start()
    stack.wait_status("regen", "ok")
    assert p.stop() == 0

    # --only-token prints the token alone; it supersedes the previous one.
    r = stack.client.run("wsproxy", "regenerate-token", "regen", "--only-token")
    assert r.rc == 0, r
    newest = r.stdout.strip()
    assert PROXY_TOKEN_RE.match(newest) and newest != new, r
    _expect_fail(stack, new, ["Invalid external proxy token"], name="regen")
    stack.start_proxy(newest, name="regen").start().stop()
