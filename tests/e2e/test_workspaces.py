"""Workspaces registered on the primary (issue 3, part 1): the API a user, a script and the
agent see. The agent token is shown once, authenticates the agent, and stops working when the
workspace is deleted; bad input changes nothing."""

import json
import re

import pytest

import harness
from harness import OWNER_USERNAME, Api, parse_table as harness_parse_table

APP_CODE = {"slug": "code", "url": "http://127.0.0.1:8080", "subdomain": False,
            "sharing_level": "owner", "display_name": "VS Code"}
APP_WEB = {"slug": "web", "url": "https://127.0.0.1:8443", "subdomain": True,
           "sharing_level": "public"}


WORKSPACE_KEYS = """id created_at updated_at owner_id owner_name owner_avatar_url organization_id
organization_name template_id template_name template_display_name template_icon
template_allow_user_cancel_workspace_jobs template_active_version_id
template_require_active_version latest_build outdated name autostart_schedule ttl_ms
last_used_at deleting_at dormant_at health automatic_updates allow_renames favorite"""
BUILD_KEYS = """id created_at updated_at workspace_id workspace_name workspace_owner_id
workspace_owner_name workspace_owner_avatar_url template_version_id template_version_name
build_number transition initiator_id initiator_name job reason resources deadline max_deadline
status daily_cost"""
JOB_KEYS = "id created_at started_at completed_at status file_id tags queue_position queue_size"
RESOURCE_KEYS = ("id created_at job_id workspace_transition type name hide icon agents metadata "
                 "daily_cost")
AGENT_KEYS = """id created_at updated_at status lifecycle_state name resource_id architecture
environment_variables operating_system logs_length logs_overflowed version api_version apps
connection_timeout_seconds troubleshooting_url subsystems health display_apps log_sources
scripts startup_script_behavior"""
APP_KEYS = ("id url external slug display_name subdomain subdomain_name sharing_level "
            "healthcheck health hidden open_in statuses")

MANIFEST_KEYS = """agent_id agent_name owner_name workspace_id workspace_name git_auth_configs
vscode_port_proxy_uri apps derpmap derp_force_websockets environment_variables directory
motd_file disable_direct_connections metadata scripts"""


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack()


def _create(api, name, apps=(), agent="main", user="me"):
    return api.post(f"/api/v2/users/{user}/workspaces",
                    json={"name": name, "agents": [{"name": agent, "apps": list(apps)}]})


def _names(api, q="owner:me"):
    r = api.get("/api/v2/workspaces", params={"q": q})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["workspaces"])
    return sorted(w["name"] for w in body["workspaces"])


def test_create_get_list_and_manifest(stack):
    api = stack.api
    r = _create(api, "dev", [APP_CODE, APP_WEB])
    assert r.status_code == 201, r.text
    ws = r.json()
    token = ws.pop("agent_token")
    assert len(token) == 36
    assert ws["name"] == "dev" and ws["owner_name"] == OWNER_USERNAME
    build = ws["latest_build"]
    assert build["status"] == "running" and build["transition"] == "start"
    agent = build["resources"][0]["agents"][0]
    assert agent["name"] == "main" and agent["status"] == "connecting"
    apps = {a["slug"]: a for a in agent["apps"]}
    assert apps["code"]["display_name"] == "VS Code" and apps["code"]["subdomain"] is False
    assert apps["web"]["subdomain_name"] == f"web--main--dev--{OWNER_USERNAME}"
    assert apps["web"]["sharing_level"] == "public"

    # Every key of Coder's Workspace, WorkspaceBuild, ProvisionerJob, WorkspaceResource,
    # WorkspaceAgent and WorkspaceApp (CODER-COMPAT Part 2 §3), so a Go client decodes it.
    assert set(ws) >= set(WORKSPACE_KEYS.split())
    assert set(build) >= set(BUILD_KEYS.split())
    assert set(build["job"]) >= set(JOB_KEYS.split())
    assert set(build["resources"][0]) >= set(RESOURCE_KEYS.split())
    assert set(agent) >= set(AGENT_KEYS.split())
    assert set(apps["web"]) >= set(APP_KEYS.split())
    assert ws["health"] == {"healthy": False, "failing_agents": [agent["id"]]}
    assert apps["web"]["health"] == "disabled" and apps["web"]["external"] is False

    # The token is never shown again.
    for path in (f"/api/v2/workspaces/{ws['id']}", "/api/v2/users/me/workspace/dev",
                 f"/api/v2/users/{OWNER_USERNAME}/workspace/DEV", "/api/v2/workspaces"):
        r = api.get(path)
        assert r.status_code == 200, (path, r.text)
        assert token not in r.text
    assert "dev" in _names(api)

    # The agent reads its manifest with its token.
    agent_api = Api(stack.primary.url, token)
    r = agent_api.get("/api/v2/workspaceagents/me/manifest")
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["workspace_name"] == "dev" and m["agent_name"] == "main"
    assert sorted(a["slug"] for a in m["apps"]) == ["code", "web"]
    assert set(m) >= set(MANIFEST_KEYS.split())
    assert m["environment_variables"] == {} and m["directory"] == "" and m["derpmap"] is None
    assert m["disable_direct_connections"] is False
    r = api.get(f"/api/v2/workspaceagents/{agent['id']}")
    assert r.status_code == 200 and r.json()["name"] == "main"


@pytest.mark.parametrize("body,field", [
    ({"name": "bad name"}, "name"),
    ({"name": "-dev"}, "name"),
    ({"name": "x" * 33}, "name"),
    ({"name": 5}, "name"),
    ({"name": "ok", "agents": [{"name": "no way"}]}, "agents[0].name"),
    ({"name": "ok", "agents": [{}, {}]}, "agents"),
    ({"name": "ok", "agents": [{"apps": [{"slug": "Bad", "url": "http://a"}]}]},
     "agents[0].apps[0]"),
    ({"name": "ok", "agents": [{"apps": [{"slug": "a", "url": "ftp://a"}]}]},
     "agents[0].apps[0]"),
    ({"name": "ok", "agents": [{"apps": [{"slug": "a", "url": "http://a",
                                          "sharing_level": "everyone"}]}]},
     "agents[0].apps[0]"),
    ({"name": "ok", "agents": [{"apps": [{"slug": "a", "url": "http://a"},
                                         {"slug": "a", "url": "http://b"}]}]},
     "agents[0].apps"),
    ({"name": "ok", "agents": [{"apps": [{"slug": f"a{i}", "url": "http://a"}
                                         for i in range(65)]}]},
     "agents[0].apps"),
])
def test_bad_input_changes_nothing(stack, body, field):
    before = _names(stack.api)
    r = stack.api.post("/api/v2/users/me/workspaces", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["message"] == "Validation failed."
    assert err["validations"][0]["field"] == field
    assert _names(stack.api) == before


def test_malformed_json(stack):
    before = _names(stack.api)
    for raw in (b"", b"[]", b"{", b'{"name": "a"} x'):
        r = stack.api.post("/api/v2/users/me/workspaces", data=raw)
        assert r.status_code == 400, r.text
        assert "message" in r.json()
    assert _names(stack.api) == before


def test_oversize_body_stores_nothing(stack):
    before = _names(stack.api)
    payload = json.dumps({"name": "big", "agents": [{"apps": [
        {"slug": "a", "url": "http://a", "display_name": "x" * (1 << 20)}]}]}).encode()
    head = (f"POST /api/v2/users/me/workspaces HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{stack.primary.port}\r\n"
            f"Coder-Session-Token: {stack.client.token()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    st, _, body = harness.raw_http(stack.primary.port, head, [payload])
    assert st == 413, (st, body[:200])
    assert json.loads(body)["message"]
    assert _names(stack.api) == before


def test_duplicate_name_conflicts(stack):
    assert _create(stack.api, "twin").status_code == 201
    r = _create(stack.api, "TWIN")
    assert r.status_code == 409
    assert r.json()["message"] == 'Workspace "TWIN" already exists.'


def test_delete_revokes_agent_and_frees_name(stack):
    api = stack.api
    ws = _create(api, "gone").json()
    token = ws["agent_token"]
    r = api.post(f"/api/v2/workspaces/{ws['id']}/builds", json={"transition": "stop"})
    assert r.status_code == 400 and "only the \"delete\" transition" in r.json()["message"]
    r = api.post(f"/api/v2/workspaces/{ws['id']}/builds", json={"transition": "delete"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "deleted"
    assert api.get(f"/api/v2/workspaces/{ws['id']}").status_code == 404
    assert "gone" not in _names(api)
    agent_api = Api(stack.primary.url, token)
    r = agent_api.get("/api/v2/workspaceagents/me/manifest")
    assert r.status_code == 401
    assert r.json()["message"] == "Workspace agent not authorized."
    # Deleting again: not found. The name is free again.
    r = api.post(f"/api/v2/workspaces/{ws['id']}/builds", json={"transition": "delete"})
    assert r.status_code == 404
    assert _create(api, "gone").status_code == 201


def test_agent_token_required(stack):
    anon = Api(stack.primary.url, None)
    assert anon.get("/api/v2/workspaceagents/me/manifest").status_code == 401
    wrong = Api(stack.primary.url, "00000000-0000-4000-8000-000000000000")
    assert wrong.get("/api/v2/workspaceagents/me/manifest").status_code == 401
    # A user's session token is not an agent token.
    r = stack.api.get("/api/v2/workspaceagents/me/manifest")
    assert r.status_code == 401


def test_members_see_only_their_own(stack):
    api = stack.api
    r = api.post("/api/v2/users", json={"email": "m@example.com", "username": "member",
                                        "password": "SomeSecure-Pass1!", "login_type":
                                        "password"})
    assert r.status_code == 201, r.text
    login = Api(stack.primary.url, None).post(
        "/api/v2/users/login", json={"email": "m@example.com", "password": "SomeSecure-Pass1!"})
    assert login.status_code == 201, login.text
    member = Api(stack.primary.url, login.json()["session_token"])
    ws = _create(api, "owners-own").json()
    assert _create(member, "mine").status_code == 201
    assert _create(member, "theirs", user=OWNER_USERNAME).status_code == 404
    assert _names(member) == ["mine"]
    assert _names(member, f"owner:{OWNER_USERNAME}") == []
    assert member.get(f"/api/v2/workspaces/{ws['id']}").status_code == 404
    assert member.get(f"/api/v2/users/{OWNER_USERNAME}/workspace/owners-own").status_code == 404
    r = member.post(f"/api/v2/workspaces/{ws['id']}/builds", json={"transition": "delete"})
    assert r.status_code == 404
    agent_id = ws["latest_build"]["resources"][0]["agents"][0]["id"]
    r = member.get(f"/api/v2/workspaceagents/{agent_id}")
    assert r.status_code == 404
    assert r.json()["message"] == ("Resource not found or you do not have access to this "
                                   "resource")
    assert api.get(f"/api/v2/workspaceagents/{agent_id}").status_code == 200
    assert "owners-own" in _names(api)
    # The owner sees everyone's.
    assert "mine" in _names(api, "")


def test_list_filters_and_pages(ctx):
    """name: matches a substring in any case; limit/offset cut a page of the owner-then-name
    order, and count is every match, as in Coder."""
    api = ctx.stack().api
    for name in ("web-2", "Web-1", "db", "api"):
        assert _create(api, name).status_code == 201
    assert _names(api, "owner:me name:WEB") == ["Web-1", "web-2"]
    assert _names(api, "web") == ["Web-1", "web-2"]
    assert _names(api, "name:%") == []

    def page(**params):
        r = api.get("/api/v2/workspaces", params={"q": "owner:me", **params})
        assert r.status_code == 200, r.text
        return [w["name"] for w in r.json()["workspaces"]], r.json()["count"]

    assert page() == (["api", "db", "Web-1", "web-2"], 4)
    assert page(limit=2) == (["api", "db"], 4)
    assert page(limit=2, offset=2) == (["Web-1", "web-2"], 4)
    assert page(offset=9) == ([], 4)
    for key, value, why in (("limit", "-1", "value is negative"),
                            ("offset", "x", 'parsing "x": invalid syntax'),
                            ("limit", "4294967296", "value out of range")):
        r = api.get("/api/v2/workspaces", params={key: value})
        assert r.status_code == 400, r.text
        err = r.json()
        assert err["message"] == "Query parameters have invalid values."
        assert err["validations"][0]["field"] == key
        assert err["validations"][0]["detail"].startswith(
            f'Query param "{key}" must be a valid 32-bit positive integer')
        assert why in err["validations"][0]["detail"]


def test_restart_keeps_workspaces(stack):
    before = _names(stack.api)
    assert stack.primary.stop() == 0
    stack.primary.start()
    assert _names(stack.api) == before


# ---- the CLI ------------------------------------------------------------------------------


def test_cli_create_list_delete(stack):
    cli = stack.client
    r = cli.run("create", "cli-ws", "--agent", "dev",
                "--app", "code=http://127.0.0.1:8080,name=VS Code, Insiders",
                "--app", "web=http://127.0.0.1:3000,subdomain,share=authenticated")
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == ('Workspace "cli-ws" created. Save the agent token, it will not be '
                        'shown again.')
    assert lines[1].startswith("Agent token: ")
    token = lines[1].split(": ", 1)[1]
    assert f"CODER_AGENT_URL={stack.primary.url} CODER_AGENT_TOKEN={token} coder agent" in r.stdout
    ws = stack.api.get("/api/v2/users/me/workspace/cli-ws").json()
    agent = ws["latest_build"]["resources"][0]["agents"][0]
    assert agent["name"] == "dev"
    apps = {a["slug"]: a for a in agent["apps"]}
    assert apps["code"]["display_name"] == "VS Code, Insiders"  # a comma inside a spec stays
    assert apps["web"]["subdomain"] is True
    assert apps["web"]["sharing_level"] == "authenticated"

    r = cli.run("list")
    assert r.rc == 0, r
    rows = {row["workspace"]: row for row in harness_parse_table(r.stdout)}
    assert rows[f"{OWNER_USERNAME}/cli-ws"]["status"] == "Started"
    r = cli.run("list", "-o", "json")
    assert r.rc == 0 and "cli-ws" in [w["name"] for w in json.loads(r.stdout)]
    assert token not in r.stdout
    r = cli.run("list", "-c", "name,healthy")
    assert r.rc == 0 and r.stdout.split()[0:2] == ["NAME", "HEALTHY"], r

    r = cli.run("delete", "cli-ws", "-y")
    assert r.rc == 0, r
    # Coder's words, with Go's time.Stamp ("Jan _2 15:04:05").
    assert re.search(rf"^{OWNER_USERNAME}/cli-ws has been deleted at "
                     r"[A-Z][a-z]{2} [ 1-3][0-9] \d\d:\d\d:\d\d!$", r.stdout, re.M), r
    assert f"{OWNER_USERNAME}/cli-ws was last used 0 days ago" in r.stderr
    assert "cli-ws" not in _names(stack.api)


@pytest.mark.parametrize("args,needle", [
    (("create",), "wanted 1 argument"),
    (("create", "x", "--app", "nourl"), 'invalid --app "nourl"'),
    (("create", "x", "--app", "a=http://h,bogus"), 'unknown option "bogus"'),
    (("create", "x", "--app", "a="), 'missing URL'),
    (("create", "bad name"), "Validation failed."),
    (("create", "x", "--app", "a=ftp://h"), "url must be an http or https URL"),
    (("list", "-c", "nope"), 'unknown column "nope"'),
    (("list", "-o", "yaml"), 'invalid value "yaml"'),
    (("delete",), "wanted 1 argument"),
    (("delete", "no-such-workspace", "-y"), "Resource not found"),
])
def test_cli_errors(stack, args, needle):
    before = _names(stack.api)
    r = stack.client.run(*args)
    assert r.rc != 0, r
    assert r.stdout.strip() == "", r
    assert len(r.err_lines) == 1, r
    assert needle in r.err_lines[0], r
    assert _names(stack.api) == before


def test_cli_list_empty_says_how_to_create(ctx):
    stack = ctx.stack()
    r = stack.client.run("list")
    assert r.rc == 0
    assert r.stdout == ""
    assert "> No workspaces found! Create one:" in r.stderr
    assert "coder create <name>" in r.stderr
