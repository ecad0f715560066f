"""Fixtures for the end-to-end suite (see harness.py for the pieces).

- certs   (session):  test CA, server cert for 127.0.0.1/localhost, client certs.
- coder   (session):  path of the binary ($CODER_BIN or <repo>/build/coder).
- ctx     (function): a Ctx in tmp_path; every process it started is stopped at teardown.
- mctx    (module):   the same, shared by the tests of one module (one primary per module).
On a failed test the tail of every relevant process log is added to the report.
"""

import os

import pytest

import harness


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than 20 s (still runs by default)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Processes started from here on (including by module fixtures set up for this test)
    # belong to this test's failure report.
    item._e2e_first_proc = len(harness.ALL_PROCESSES)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    first = getattr(item, "_e2e_first_proc", 0)
    procs = [p for p in list(harness.ALL_PROCESSES)
             if (p.index is not None and p.index >= first) or p.running()]
    for p in procs:
        state = "running" if p.running() else f"exited rc={p.returncode}"
        rep.sections.append((f"process {p.name} pid {p.pid} ({state})", p.tail(40)))


@pytest.fixture(scope="session")
def coder():
    path = harness.coder_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"coder binary not found or not executable: {path} "
                    f"(build it, or set CODER_BIN)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return harness.make_certs(tmp_path_factory.mktemp("certs"))


def _finish(c):
    reports = c.teardown()
    if reports:
        pytest.fail("sanitizer report(s) in process logs:\n" + "\n\n".join(reports),
                    pytrace=False)


@pytest.fixture
def ctx(tmp_path, certs, coder):
    c = harness.Ctx(tmp_path, certs, coder)
    yield c
    _finish(c)


@pytest.fixture(scope="module")
def mctx(request, tmp_path_factory, certs, coder):
    name = request.module.__name__.rsplit(".", 1)[-1]
    c = harness.Ctx(tmp_path_factory.mktemp(name), certs, coder)
    yield c
    _finish(c)


def pytest_sessionfinish(session, exitstatus):
    # Safety net: nothing outlives the run, even if a fixture's teardown never ran.
    for p in list(harness.ALL_PROCESSES):
        if p.running():
            p.stop(timeout=5)
