"""`coder login` / `coder logout` and the first-user API (CODER-COMPAT part 2 §1)."""

import stat

import pytest

import harness
from harness import API_KEY_RE, OWNER_EMAIL, OWNER_PASSWORD, OWNER_USERNAME, UUID_RE

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
LOGGED_OUT = "You are no longer logged in. You can log in using 'coder login <url>'."
NOT_LOGGED_IN = "You are not logged in. Try logging in using 'coder login <url>'."


@pytest.fixture
def primary(ctx):
    return ctx.primary().start()


def _json_error(r, status, message):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    assert r.json()["message"] == message, r.json()
    return r.json()


def _one_line_error(r):
    assert r.rc > 0, r
    assert len(r.err_lines) == 1, f"expected exactly one non-empty stderr line: {r}"
    return r.err_lines[0]


def test_first_user_flow(ctx, primary):
    assert (f"Started HTTP listener at http://127.0.0.1:{primary.port}"
            in primary.proc.stdout())
    anon = primary.api()
    r = anon.get("/api/v2/users/first")
    _json_error(r, 404, "The initial user has not been created!")
    assert r.headers.get("X-Coder-Build-Version")

    client = ctx.client()
    client.login_owner(primary.url)
    token = client.token()
    assert API_KEY_RE.match(token), token
    assert client.url() == primary.url
    for f in (client.session_path, client.url_path):
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f"{f} is readable by others"

    r = anon.get("/api/v2/users/first")
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "The initial user has already been created!"}
    r = anon.post("/api/v2/users/first", json={
        "email": "second@example.com", "username": "second", "name": "Second",
        "password": "AnotherSecurePassword!2", "trial": False})
    _json_error(r, 409, "The initial user has already been created.")

    me = client.api().get("/api/v2/users/me")
    assert me.status_code == 200, me.text
    me = me.json()
    assert me["username"] == OWNER_USERNAME
    assert me["email"] == OWNER_EMAIL
    assert me["name"] == harness.OWNER_FULL_NAME
    assert me["status"] == "active"
    assert me["login_type"] == "password"
    assert UUID_RE.match(me["id"])
    assert [role["name"] for role in me["roles"]] == ["owner"]
    assert me["roles"][0]["display_name"] == "Owner"
    assert isinstance(me["organization_ids"], list)
    for k in ("avatar_url", "created_at", "updated_at", "last_seen_at", "theme_preference"):
        assert k in me, k
    # The user is also reachable by username and by id.
    for ref in (OWNER_USERNAME, me["id"]):
        r = client.api().get(f"/api/v2/users/{ref}")
        assert r.status_code == 200 and r.json()["id"] == me["id"], r.text


def test_password_login(ctx, primary):
    ctx.client().login_owner(primary.url)
    anon = primary.api()
    r = anon.post("/api/v2/users/login", json={"email": OWNER_EMAIL, "password": OWNER_PASSWORD})
    assert r.status_code == 201, r.text
    token = r.json()["session_token"]
    assert API_KEY_RE.match(token)
    assert f"coder_session_token={token}" in r.headers.get("Set-Cookie", ""), r.headers
    assert primary.api(token).get("/api/v2/users/me").json()["username"] == OWNER_USERNAME
    # The cookie works as well as the header.
    r = anon.get("/api/v2/users/me", cookies={"coder_session_token": token})
    assert r.status_code == 200, r.text

    for body in ({"email": OWNER_EMAIL, "password": "WrongPassword!123"},
                 {"email": "nobody@example.com", "password": OWNER_PASSWORD}):
        _json_error(anon.post("/api/v2/users/login", json=body), 401,
                    "Incorrect email or password.")


def test_weak_first_user_password_creates_nothing(ctx, primary):
    anon = primary.api()
    r = anon.post("/api/v2/users/first", json={
        "email": OWNER_EMAIL, "username": OWNER_USERNAME, "name": "Admin",
        "password": "password", "trial": False})
    body = _json_error(r, 400, "Password not strong enough!")
    assert [v["field"] for v in body["validations"]] == ["password"]
    _json_error(anon.get("/api/v2/users/first"), 404, "The initial user has not been created!")

    client = ctx.client()
    r = client.run("login", primary.url, "--first-user-username", OWNER_USERNAME,
                   "--first-user-email", OWNER_EMAIL, "--first-user-password", "password",
                   "--first-user-full-name", "Admin", "--first-user-trial=false")
    _one_line_error(r)
    assert not client.session_path.exists()
    _json_error(anon.get("/api/v2/users/first"), 404, "The initial user has not been created!")


def test_login_with_environment(ctx, primary):
    client = ctx.client()
    r = client.run("login", primary.url, env={
        "CODER_FIRST_USER_USERNAME": OWNER_USERNAME, "CODER_FIRST_USER_EMAIL": OWNER_EMAIL,
        "CODER_FIRST_USER_PASSWORD": OWNER_PASSWORD, "CODER_FIRST_USER_FULL_NAME": "Admin",
        "CODER_FIRST_USER_TRIAL": "false"})
    assert r.rc == 0, r
    assert f"Welcome to Coder, {OWNER_USERNAME}! You're authenticated." in r.stdout
    assert API_KEY_RE.match(client.token())


def test_logout(ctx, primary):
    client = ctx.client()
    client.login_owner(primary.url)
    token = client.token()
    assert client.api().get("/api/v2/users/me").status_code == 200

    r = client.run("logout", "-y")
    assert r.rc == 0, r
    assert LOGGED_OUT in harness.strip_ansi(r.stdout)
    assert not client.session_path.exists()
    assert not client.url_path.exists()

    r = primary.api(token).get("/api/v2/users/me")
    _json_error(r, 401, SIGNED_OUT)
    line = _one_line_error(client.run("wsproxy", "ls"))
    assert NOT_LOGGED_IN in line


def test_login_to_something_that_is_not_coder(ctx):
    client = ctx.client()
    flags = ("--first-user-username", OWNER_USERNAME, "--first-user-email", OWNER_EMAIL,
             "--first-user-password", OWNER_PASSWORD, "--first-user-trial=false")
    dead = f"http://127.0.0.1:{harness.free_port()}"
    line = _one_line_error(client.run("login", dead, *flags))
    assert dead in line, line
    web = ctx.fake_web_server()
    _one_line_error(client.run("login", web.url, *flags))
    assert not client.session_path.exists() and not client.url_path.exists()
