"""`coder login` / `coder logout` and the first-user API (CODER-COMPAT part 2 §1).

The CLI's lines are Coder's cli/login.go and cli/logout.go ones, `> ` caret included; prompts
take their answers from a pipe as Coder's cliui.Prompt does.
"""

import socket
import stat

import pytest

import harness
from harness import API_KEY_RE, OWNER_EMAIL, OWNER_PASSWORD, OWNER_USERNAME, UUID_RE

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
LOGGED_OUT = "> You are no longer logged in. You can log in using 'coder login <url>'."
NOT_SET_UP = "> Your Coder deployment hasn't been set up!"
WELCOME = f"Welcome to Coder, {OWNER_USERNAME}! You're authenticated."
GET_STARTED = "Get started by creating a template: coder templates init"
NOT_CODER = ("Failed to check server \"{url}\" for first user, is the URL correct and is coder "
             "accessible from your browser? Error - has initial user: missing build version "
             "header, not a coder instance")
NON_INTERACTIVE = "the initial user cannot be created in non-interactive mode. use the API"
OWNER_FLAGS = ("--first-user-username", OWNER_USERNAME, "--first-user-email", OWNER_EMAIL,
               "--first-user-password", OWNER_PASSWORD, "--first-user-trial=false")
NOT_LOGGED_IN = "You are not logged in. Try logging in using 'coder login <url>'."


@pytest.fixture
def primary(ctx):
    return ctx.primary().start()


def _json_error(r, status, message):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    assert r.json()["message"] == message, r.json()
    return r.json()


def _one_line_error(r, expected=None):
    assert r.rc > 0, r
    assert len(r.err_lines) == 1, f"expected exactly one non-empty stderr line: {r}"
    if expected is not None:
        assert r.err_lines[0] == f"error: {expected}", r
    return r.err_lines[0]


def _lines(r):
    """stdout lines, colours and the space after a prompt removed."""
    return [ln.rstrip() for ln in r.out_lines]


def _attempting(source, url):
    return f"Attempting to authenticate with {source} URL: '{url}'"


def _logged_in(ctx, primary):
    """An Owner logged in through the CLI, and a second client with no session."""
    owner = ctx.client("owner")
    owner.login_owner(primary.url)
    return owner, ctx.client("other")


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
    assert _lines(r) == [LOGGED_OUT], r
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
    r = client.run("login", dead, *flags)
    line = _one_line_error(r)
    assert line.startswith(f'error: Failed to check server "{dead}" for first user'), line
    assert r.stdout == "", r  # Coder says "Attempting ..." only once the server answered
    web = ctx.fake_web_server()
    _one_line_error(client.run("login", web.url, *flags), NOT_CODER.format(url=web.url))
    # A 404 without X-Coder-Build-Version is Coder's own case for this message.
    web.mode, web.status = "status", 404
    r = client.run("login", web.url, *flags)
    _one_line_error(r, NOT_CODER.format(url=web.url))
    assert r.stdout == "", r
    assert not client.session_path.exists() and not client.url_path.exists()


# --------------------------------------------------------------------------------------------
# The first user


def test_first_user_lines(ctx, primary):
    client = ctx.client()
    r = client.run("login", primary.url, *OWNER_FLAGS)
    assert r.rc == 0, r
    assert _lines(r) == [_attempting("argument", primary.url), NOT_SET_UP, WELCOME,
                         GET_STARTED], r
    assert r.stderr == "", r
    assert client.url() == primary.url
    assert client.api().get("/api/v2/users/me").json()["username"] == OWNER_USERNAME


def test_first_user_needs_a_terminal_without_a_username(ctx, primary):
    client = ctx.client()
    r = client.run("login", primary.url)
    _one_line_error(r, NON_INTERACTIVE)
    # The caret line comes first, whether or not stdin is a terminal.
    assert _lines(r) == [_attempting("argument", primary.url), NOT_SET_UP], r
    assert primary.api().get("/api/v2/users/first").status_code == 404
    assert not client.session_path.exists()


def test_first_user_trial_is_asked_without_the_flag(ctx, primary):
    client = ctx.client()
    flags = [f for f in OWNER_FLAGS if f != "--first-user-trial=false"]
    r = client.run("login", primary.url, *flags, input="no\n")
    assert r.rc == 0, r
    assert _lines(r) == [_attempting("argument", primary.url), NOT_SET_UP,
                         "> Start a trial of Enterprise? (yes/no)", WELCOME, GET_STARTED], r


def test_first_user_prompts_read_a_pipe(ctx, primary):
    # --force-tty stands for the terminal Coder requires before it asks for a username.
    client = ctx.client()
    answers = ["", "admin", "Ada Admin", "not-an-email", OWNER_EMAIL, OWNER_PASSWORD,
               "different", OWNER_PASSWORD, OWNER_PASSWORD, "no"]
    r = client.run("login", primary.url, "--force-tty", input="\n".join(answers) + "\n")
    assert r.rc == 0, r
    out = _lines(r)
    assert out[:2] == [_attempting("argument", primary.url), NOT_SET_UP], r
    assert out[2] == "> Would you like to create the first user? (yes/no)", r
    assert out[3].startswith("> What username would you like?"), r  # default: the OS user
    assert out[4:] == [
        "> (Optional) What name would you like?",
        "> What's your email?", "That's not a valid email address!", "> What's your email?",
        "> Enter a password:", "> Confirm password:", "Passwords do not match",
        "> Enter a password:", "> Confirm password:",
        "> Start a trial of Enterprise? (yes/no)", WELCOME, GET_STARTED], r
    me = client.api().get("/api/v2/users/me").json()
    assert (me["username"], me["name"], me["email"]) == ("admin", "Ada Admin", OWNER_EMAIL)


def test_first_user_refused_at_the_first_prompt(ctx, primary):
    client = ctx.client()
    r = client.run("login", primary.url, "--force-tty", input="no\n")
    _one_line_error(r, "canceled")
    assert primary.api().get("/api/v2/users/first").status_code == 404


# --------------------------------------------------------------------------------------------
# Logging in to a deployment that has its first user


@pytest.mark.parametrize("how", ["flag", "env"])
def test_login_with_token_mints_a_session(ctx, primary, how):
    owner, other = _logged_in(ctx, primary)
    token = owner.token()
    if how == "flag":
        r = other.run("login", primary.url, "--token", token)
    else:
        r = other.run("login", primary.url, env={"CODER_SESSION_TOKEN": token})
    assert r.rc == 0, r
    assert _lines(r) == [_attempting("argument", primary.url),
                         f"> Welcome to Coder, {OWNER_USERNAME}! You're authenticated."], r
    # Coder's login keeps a new key of its own (POST /users/me/keys), not the given token.
    assert API_KEY_RE.match(other.token()) and other.token() != token
    assert other.url() == primary.url
    assert other.api().get("/api/v2/users/me").json()["username"] == OWNER_USERNAME
    assert owner.api().get("/api/v2/users/me").status_code == 200


def test_use_token_as_session(ctx, primary):
    owner, other = _logged_in(ctx, primary)
    r = other.run("login", primary.url, "--use-token-as-session",
                  env={"CODER_SESSION_TOKEN": owner.token()})
    assert r.rc == 0, r
    assert _lines(r)[-1] == f"> Welcome to Coder, {OWNER_USERNAME}! You're authenticated.", r
    assert other.token() == owner.token()


@pytest.mark.parametrize("source", ["flag", "environment", "config"])
def test_url_sources(ctx, primary, source):
    owner, other = _logged_in(ctx, primary)
    if source == "flag":
        r = other.run("login", "--url", primary.url, "--token", owner.token())
    elif source == "environment":
        r = other.run("login", env={"CODER_URL": primary.url,
                                    "CODER_SESSION_TOKEN": owner.token()})
    else:
        other.config_dir.mkdir(parents=True, exist_ok=True)
        other.url_path.write_text(primary.url)
        r = other.run("login", "--token", owner.token())
    assert r.rc == 0, r
    assert _lines(r)[0] == _attempting(source, primary.url), r
    assert other.url() == primary.url


def test_no_url(ctx):
    r = ctx.client().run("login", "--token", "abcdefghij-abcdefghijklmnopqrstuv")
    _one_line_error(r, "no url argument provided")
    assert r.stdout == "", r


def test_https_is_the_default_scheme(ctx):
    primary = ctx.primary(tls=True, http=False).start()
    owner = ctx.client("owner")
    owner.login_owner(primary.url)
    other = ctx.client("other")
    bare = primary.url.removeprefix("https://")
    r = other.run("login", bare, "--token", owner.token())
    assert r.rc == 0, r
    assert _lines(r)[0] == _attempting("argument", primary.url), r
    assert other.url() == primary.url


def test_localhost_defaults_to_http(ctx, primary):
    try:
        socket.getaddrinfo("localhost", primary.port)
    except OSError:
        pytest.skip("localhost does not resolve here")
    owner, other = _logged_in(ctx, primary)
    r = other.run("login", f"localhost:{primary.port}", "--token", owner.token())
    assert r.rc == 0, r
    assert _lines(r)[0] == _attempting("argument", f"http://localhost:{primary.port}"), r


def test_pasted_token_read_from_a_pipe(ctx, primary):
    owner, other = _logged_in(ctx, primary)
    token = owner.token()
    r = other.run("login", primary.url, input=f"not-a-token\n{token}\n")
    assert r.rc == 0, r
    assert _lines(r) == [
        _attempting("argument", primary.url), "Open the following in your browser:", "",
        f"\t{primary.url}/cli-auth", "", "> Paste your token here:", "That's not a valid token!",
        "> Paste your token here:",
        f"> Welcome to Coder, {OWNER_USERNAME}! You're authenticated."], r
    assert other.token() == token  # a pasted token is kept as it is


def test_no_token_to_paste(ctx, primary):
    _, other = _logged_in(ctx, primary)
    r = other.run("login", primary.url, input="")
    _one_line_error(r, "no token pasted: end of input")
    assert not other.session_path.exists()


def test_bad_token(ctx, primary):
    _, other = _logged_in(ctx, primary)
    r = other.run("login", primary.url, "--token", "abcdefghij-abcdefghijklmnopqrstuv")
    _one_line_error(r, f"{SIGNED_OUT} Suggestion: Try logging in using 'coder login'.")
    assert not other.session_path.exists()


# --------------------------------------------------------------------------------------------
# Logout's prompt


@pytest.mark.parametrize("answer", ["\n", "yes\n", "y\n", "Y\n"])
def test_logout_confirmed_through_a_pipe(ctx, primary, answer):
    client = ctx.client()
    client.login_owner(primary.url)
    r = client.run("logout", input=answer)
    assert r.rc == 0, r
    assert _lines(r) == ["> Are you sure you want to log out? (yes/no)", LOGGED_OUT], r
    assert not client.session_path.exists() and not client.url_path.exists()


@pytest.mark.parametrize("answer,refusal", [
    ("no\n", "canceled"),
    ("n\n", "canceled"),
    ("", "canceled: no answer on standard input (pass --yes to skip the prompt)"),
])
def test_logout_refused_through_a_pipe(ctx, primary, answer, refusal):
    client = ctx.client()
    client.login_owner(primary.url)
    r = client.run("logout", input=answer)
    _one_line_error(r, refusal)
    assert _lines(r) == ["> Are you sure you want to log out? (yes/no)"], r
    assert client.api().get("/api/v2/users/me").status_code == 200
