"""`coder wsproxy create|edit|regenerate-token|delete|ls` output as Coder prints it
(CODER-COMPAT §1.1-1.5), prompts answered through a pipe (cliui.Prompt reads any stdin), the
layout of API errors, and --write-config in the servers' --help.

A CLI error is one non-empty stderr line and a non-zero exit.
"""

import json

import pytest

import harness
from harness import PROXY_TOKEN_RE, strip_ansi

PROXY_FIELDS = {"id", "name", "display_name", "icon_url", "healthy", "path_app_url",
                "wildcard_hostname", "derp_enabled", "derp_only", "status", "created_at",
                "updated_at", "deleted", "version"}
ICON = "/emojis/1f5fa.png"
BAD_ICON = "icon must be a relative path to an emoji or a publicly hosted image URL"
RULE = "—————————————————————————————————————————————————"


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack()


def lines(text):
    """Output lines with colours and the space after a prompt removed."""
    return [ln.rstrip() for ln in strip_ansi(text).splitlines()]


def one_error(r, expected=None):
    assert r.rc > 0, r
    assert len(r.err_lines) == 1, f"expected exactly one non-empty stderr line: {r}"
    if expected is not None:
        assert r.err_lines[0] == f"error: {expected}", r
    return r.err_lines[0]


def create(stack, name, *extra, display=None, icon=ICON, input=None):
    return stack.client.run("wsproxy", "create", f"--name={name}",
                            f"--display-name={display or name.upper()}", f"--icon={icon}",
                            *extra, input=input)


def token_works(stack, token):
    """Whether the primary accepts token as a proxy's (an endpoint only proxies call)."""
    r = stack.primary.api().get("/api/v2/workspaceproxies/me/crypto-keys",
                                params={"feature": "workspace_apps_token"},
                                headers={"Coder-External-Proxy-Token": token})
    assert r.status_code in (200, 401), (r.status_code, r.text)
    return r.status_code == 200


# --------------------------------------------------------------------------------------------
# create


def test_create_only_token(stack):
    r = create(stack, "only-token", "--only-token")
    assert r.rc == 0, r
    assert len(lines(r.stdout)) == 1, r
    m = PROXY_TOKEN_RE.match(lines(r.stdout)[0])
    assert m, r
    assert m.group(1) == stack.proxy("only-token")["id"]
    assert token_works(stack, lines(r.stdout)[0])


def test_create_json(stack):
    r = create(stack, "as-json", "-o", "json", display="As JSON")
    assert r.rc == 0, r
    assert r.stdout.startswith('{\n  "proxy": {\n    "id": '), r.stdout  # two-space indent
    body = json.loads(r.stdout)
    assert set(body) == {"proxy", "proxy_token"}
    assert set(body["proxy"]) == PROXY_FIELDS
    assert (body["proxy"]["name"], body["proxy"]["display_name"]) == ("as-json", "As JSON")
    assert body["proxy"]["status"]["status"] == "unregistered"
    assert PROXY_TOKEN_RE.match(body["proxy_token"]).group(1) == body["proxy"]["id"]
    assert token_works(stack, body["proxy_token"])


def test_create_table(stack):
    r = create(stack, "as-table", "-o", "table")
    assert r.rc == 0, r
    assert harness.table_header(r.stdout) == ["NAME", "URL", "PROXY TOKEN"], r.stdout
    rows = harness.parse_table(r.stdout)
    assert len(rows) == 1, rows
    assert (rows[0]["name"], rows[0]["url"]) == ("as-table", "")  # not registered yet
    assert PROXY_TOKEN_RE.match(rows[0]["proxy token"]).group(1) == stack.proxy("as-table")["id"]


def test_create_table_columns(stack):
    r = create(stack, "cols", "-o", "table", "-c", "proxy token,display name", display="Cols")
    assert r.rc == 0, r
    assert harness.table_header(r.stdout) == ["PROXY TOKEN", "DISPLAY NAME"], r.stdout
    row = harness.parse_table(r.stdout)[0]
    assert row["display name"] == "Cols"
    assert PROXY_TOKEN_RE.match(row["proxy token"])


def test_create_no_prompt_needs_a_name(stack):
    before = stack.snapshot()
    r = stack.client.run("wsproxy", "create", "--no-prompt", "--display-name=Nameless")
    one_error(r, "proxy name is required")
    assert r.stdout == "", r
    assert stack.snapshot() == before


def test_create_prompts_read_a_pipe(stack):
    # Name, then display name (empty: its default, the name) and icon (a bad one is asked
    # again, then an empty answer takes the default).
    r = stack.client.run("wsproxy", "create", input="piped\n\nfoo.png\n\n")
    assert r.rc == 0, r
    out = lines(r.stdout)
    assert out[:5] == ["> Proxy Name:", "> Display Name: (piped)",
                       f"> Icon URL: ({ICON})", BAD_ICON, f"> Icon URL: ({ICON})"], r
    assert out[5] == ('Workspace Proxy "piped" created successfully. Save this token, it will '
                      'not be shown again.'), r
    p = stack.proxy("piped")
    assert (p["display_name"], p["icon_url"]) == ("piped", ICON)


def test_create_prompt_without_input(stack):
    before = stack.snapshot()
    r = stack.client.run("wsproxy", "create", input="")
    one_error(r, 'no answer to "Proxy Name:": end of input')
    assert stack.snapshot() == before


# --------------------------------------------------------------------------------------------
# edit


def test_edit_text(stack):
    assert create(stack, "ed-text").rc == 0
    r = stack.client.run("wsproxy", "edit", "ed-text", "--display-name", "Edited")
    assert r.rc == 0, r
    assert r.stdout == 'Workspace Proxy "ed-text" updated successfully.\n', r
    p = stack.proxy("ed-text")
    assert (p["display_name"], p["icon_url"]) == ("Edited", ICON)  # the icon is kept


def test_edit_json(stack):
    assert create(stack, "ed-json").rc == 0
    r = stack.client.run("wsproxy", "edit", "ed-json", "--name", "ed-json2", "-o", "json")
    assert r.rc == 0, r
    body = json.loads(r.stdout)
    assert set(body) == PROXY_FIELDS, body  # a WorkspaceProxy, no token
    assert (body["name"], body["display_name"]) == ("ed-json2", "ED-JSON")
    assert body["id"] == stack.proxy("ed-json2")["id"]
    assert stack.proxy("ed-json") is None


def test_edit_table(stack):
    assert create(stack, "ed-table").rc == 0
    r = stack.client.run("wsproxy", "edit", "ed-table", "--icon", "/emojis/2194.png", "-o",
                         "table")
    assert r.rc == 0, r
    assert harness.table_header(r.stdout) == ["NAME", "URL"], r.stdout
    assert harness.parse_table(r.stdout) == [{"name": "ed-table", "url": ""}]
    assert stack.proxy("ed-table")["icon_url"] == "/emojis/2194.png"
    # Edit's columns have no token.
    r = stack.client.run("wsproxy", "edit", "ed-table", "--icon", ICON, "-o", "table", "-c",
                         "proxy token")
    assert "proxy token" in one_error(r)
    assert stack.proxy("ed-table")["icon_url"] == "/emojis/2194.png"


# --------------------------------------------------------------------------------------------
# regenerate-token


def _first_token(stack, name):
    r = create(stack, name, "--only-token")
    assert r.rc == 0, r
    return r.stdout.strip()


def test_regenerate_token_text(stack):
    old = _first_token(stack, "regen-text")
    r = stack.client.run("wsproxy", "regenerate-token", "regen-text")
    assert r.rc == 0, r
    new = lines(r.stdout)[3].removeprefix("Token: ")
    assert lines(r.stdout) == [
        'Workspace Proxy "regen-text" updated successfully.', RULE,
        "Save this authentication token, it will not be shown again.", f"Token: {new}", "",
        "Start the proxy by running:",
        f"CODER_PROXY_SESSION_TOKEN={new} coder wsproxy server --primary-access-url "
        f"{stack.primary.url} --http-address=0.0.0.0:3001"], r
    assert new != old and PROXY_TOKEN_RE.match(new)
    assert token_works(stack, new) and not token_works(stack, old)


def test_regenerate_token_json(stack):
    old = _first_token(stack, "regen-json")
    r = stack.client.run("wsproxy", "regenerate-token", "regen-json", "-o", "json")
    assert r.rc == 0, r
    body = json.loads(r.stdout)
    assert set(body) == {"proxy", "proxy_token"}
    assert body["proxy"]["name"] == "regen-json"
    new = body["proxy_token"]
    assert new != old and PROXY_TOKEN_RE.match(new).group(1) == body["proxy"]["id"]
    assert token_works(stack, new) and not token_works(stack, old)


def test_regenerate_token_table(stack):
    old = _first_token(stack, "regen-table")
    r = stack.client.run("wsproxy", "regenerate-token", "regen-table", "-o", "table")
    assert r.rc == 0, r
    assert harness.table_header(r.stdout) == ["NAME", "URL", "PROXY TOKEN"], r.stdout
    row = harness.parse_table(r.stdout)[0]
    assert (row["name"], row["url"]) == ("regen-table", "")
    assert row["proxy token"] != old and token_works(stack, row["proxy token"])
    assert not token_works(stack, old)


# --------------------------------------------------------------------------------------------
# delete and its prompt


@pytest.mark.parametrize("cmd", ["delete", "rm"])
@pytest.mark.parametrize("answer", ["y", "yes", "Y", "YES"])
def test_delete_confirmed_through_a_pipe(stack, cmd, answer):
    name = f"del-{cmd}-{'u' if answer.isupper() else 'l'}{answer.lower()}"
    assert create(stack, name, display="Doomed Proxy").rc == 0
    r = stack.client.run("wsproxy", cmd, name, input=f"{answer}\n")
    assert r.rc == 0, r
    assert lines(r.stdout) == ["> Delete this workspace proxy: Doomed Proxy? (yes/no)",
                               f'Workspace proxy "{name}" deleted successfully'], r
    assert stack.proxy(name) is None


@pytest.mark.parametrize("answer,refusal", [
    ("n\n", "canceled"),
    ("no\n", "canceled"),
    ("maybe\n", "canceled"),
    ("\n", "canceled"),  # the default is no
    ("", "canceled: no answer on standard input (pass --yes to skip the prompt)"),
])
def test_delete_refused_through_a_pipe(stack, answer, refusal):
    name = "kept"
    if stack.proxy(name) is None:
        assert create(stack, name, display="Kept Proxy").rc == 0
    before = stack.snapshot()
    r = stack.client.run("wsproxy", "delete", name, input=answer)
    one_error(r, refusal)
    assert lines(r.stdout) == ["> Delete this workspace proxy: Kept Proxy? (yes/no)"], r
    assert stack.snapshot() == before


def test_delete_yes_flag_skips_the_prompt(stack):
    assert create(stack, "del-flag").rc == 0
    r = stack.client.run("wsproxy", "rm", "del-flag", "-y")
    assert r.rc == 0, r
    assert r.stdout == 'Workspace proxy "del-flag" deleted successfully\n', r
    assert stack.proxy("del-flag") is None


# --------------------------------------------------------------------------------------------
# ls


def test_ls_has_no_token_column(stack):
    r = stack.client.run("wsproxy", "ls", "-c", "name,proxy token")
    line = one_error(r)
    assert '"proxy token"' in line and "--column" in line, line
    assert r.stdout == "", r


# --------------------------------------------------------------------------------------------
# API errors: Coder's formatCoderSDKError order on one line


def test_validation_error_layout(stack):
    before = stack.snapshot()
    r = create(stack, "bad name!")
    one_error(r, "Validation failed. 1 validation error(s) found: name: name must be 1-32 "
                 "letters, digits and single dashes")
    assert r.stdout == "", r
    assert stack.snapshot() == before


def test_message_only_error_is_verbatim(stack):
    one_error(stack.client.run("wsproxy", "delete", "no-such-proxy", "-y"),
              "Resource not found or you do not have access to this resource")
    one_error(stack.client.run("wsproxy", "delete", "primary", "-y"),
              "Cannot delete primary proxy")


def test_unauthorized_error_suggests_login(stack):
    r = stack.client.run("wsproxy", "ls", "--token", "abcdefghij-abcdefghijklmnopqrstuv")
    # The helper replaces the detail, as in Coder.
    one_error(r, "You are signed out or your session has expired. Please sign in again to "
                 "continue. Suggestion: Try logging in using 'coder login'.")


# --------------------------------------------------------------------------------------------
# --write-config in the servers' help

CONFIG_HELP = """CONFIG OPTIONS:
  -c, --config yaml-config-path, $CODER_CONFIG_PATH
          Specify a YAML file to load configuration from.

      --write-config bool
          Write out the current server config as YAML to stdout.

"""


@pytest.mark.parametrize("cmd", [("server",), ("wsproxy", "server")])
def test_help_lists_write_config(ctx, cmd):
    r = ctx.run([*cmd, "--help"])
    assert r.rc == 0, r
    assert CONFIG_HELP in r.stdout, r.stdout
    assert r.stdout.count("--write-config") == 1, r.stdout
