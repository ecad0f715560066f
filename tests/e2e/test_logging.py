"""--log-human, --log-json and --log-stackdriver (CODER_LOGGING_*): each sink gets every line in
its own format, several at once, on the primary and on a proxy; a sink that cannot be opened
stops the server with one clear line."""
import json

import harness


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def _check_json(path, msg_key, level_key, time_key, want):
    lines = _lines(path)
    assert lines, path
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    for d in docs:
        assert set(d) == {msg_key, level_key, time_key}, d
        assert d[time_key].endswith("Z") and "T" in d[time_key], d
    assert any(want in d[msg_key] for d in docs), (want, docs[-5:])
    return docs


def test_three_sinks_on_primary_and_proxy(mctx):
    d = mctx.dir
    primary = mctx.primary(name="logs-primary", extra_args=(
        "--log-human", str(d / "p-human.log"), "--log-json", str(d / "p.json"),
        "--log-stackdriver", str(d / "p.sd"))).start()
    c = mctx.client("logs-client")
    c.login_owner(primary.url)
    stack = harness.Stack(mctx, primary, c)
    _, token = stack.create_proxy("logs")
    proxy = stack.start_proxy(token, name="logs", extra_env={
        "CODER_LOGGING_HUMAN": "", "CODER_LOGGING_JSON": str(d / "x.json"),
        "CODER_LOGGING_STACKDRIVER": str(d / "x.sd")}).start()
    stack.wait_status("logs", "ok")

    human = _lines(d / "p-human.log")
    assert any("[info]" in line and "store: applied schema migration 1" in line
               for line in human), human[:5]
    docs = _check_json(d / "p.json", "msg", "level", "ts", "store: applied schema migration 1")
    assert {x["level"] for x in docs} <= {"DEBUG", "INFO", "WARN", "ERROR"}
    docs = _check_json(d / "p.sd", "message", "severity", "timestamp",
                       "store: applied schema migration 1")
    assert {x["severity"] for x in docs} <= {"DEBUG", "INFO", "WARNING", "ERROR"}

    _check_json(d / "x.json", "msg", "level", "ts", "registered with the primary")
    _check_json(d / "x.sd", "message", "severity", "timestamp", "registered with the primary")
    # --log-human "" turns the human sink off: the proxy's stderr has no log lines.
    assert "registered with the primary" not in proxy.proc.tail(200)


def test_unopenable_sink_is_one_clear_line(mctx):
    p = mctx.primary(name="logs-bad", extra_args=("--log-json", "/nonexistent/dir/x.json"))
    p.proc.start()
    rc = p.proc.wait(15)
    assert rc != 0
    out = p.proc.tail(20)
    assert 'open log file "/nonexistent/dir/x.json": No such file or directory' in out, out
