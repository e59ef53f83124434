"""Fixtures for the Stratus end-to-end suite.

The suite starts the real `stratus server` binary (built beforehand by
`scripts/test`; override the path with STRATUS_BIN) on a free port with a
temporary data dir, and drives it with boto3 exactly as a user would. Each
test gets unique function names and deletes what it created.

Server logs go to $STRATUS_E2E_LOG_DIR (default: a temp dir printed at the
end of the run); a failing test shows the tail of the server log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stratus_harness import (  # noqa: E402
    _LOG_DIR,
    _SERVERS,
    FUNCTIONS,
    KEEP_ALIVE_SECS,
    FunctionFactory,
    new_server,
    remove_data_dir,
    zip_dir,
)

def pytest_collection_modifyitems(config, items):
    try:
        import pytest_timeout  # noqa: F401
    except ImportError:
        return
    here = str(Path(__file__).resolve().parent)
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(240))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("call", "setup"):
        for srv in _SERVERS:
            if srv.log_path.exists():
                report.sections.append((f"stratus server log tail ({srv.log_path})", srv.log_tail(40)))


def pytest_sessionfinish(session, exitstatus):
    # A test that failed between starting a server and stopping it must not
    # leave it running (with its sandboxes, cgroups and /tmp disks).
    for srv in _SERVERS:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


def pytest_terminal_summary(terminalreporter):
    if _SERVERS:
        terminalreporter.write_line(f"stratus e2e server logs: {_LOG_DIR}")


@pytest.fixture(scope="session")
def server():
    srv = new_server("main", ["--keep-alive-secs", str(KEEP_ALIVE_SECS)])
    srv.start()
    yield srv
    srv.stop()
    remove_data_dir(srv.data_dir)


@pytest.fixture(scope="session")
def lam(server):
    return server.client()


@pytest.fixture(scope="session")
def py_zip() -> bytes:
    return zip_dir(FUNCTIONS / "python")


@pytest.fixture(scope="session")
def node_zip() -> bytes:
    return zip_dir(FUNCTIONS / "node")


@pytest.fixture
def fns(lam, request):
    factory = FunctionFactory(lam, request.node.name)
    yield factory
    factory.cleanup()
