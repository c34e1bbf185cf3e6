from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import trio.testing


@pytest.fixture
def procs() -> Generator[list[Any], None, None]:
    """Node processes (node/demo.py ``NodeProcess``) a test starts: killed and reaped after it."""
    from node.demo import kill_nodes

    started: list[Any] = []
    yield started
    kill_nodes(started)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers with ``--dist loadgroup``), the tests
    that start node processes share one group: one worker runs them one after another, so two
    multi-process federations never compete for the two cores. Without xdist this is inert."""
    for item in items:
        if item.get_closest_marker("process") is not None:
            item.add_marker(pytest.mark.xdist_group("node-processes"))


def project_machine() -> bool:
    """The machine kind the project is built and tested on: Debian (fresh, Python 3.11), root.
    ``make test`` installs everything the suite needs there (pyproject's extras, iproute2)."""
    return sys.platform == "linux" and os.geteuid() == 0 and Path("/etc/debian_version").exists()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """On the project's own machine kind no test may skip: a skip there means a dependency or
    tool went missing, and would pass the suite having run less of it. Elsewhere (no root, no
    Linux) a test may still skip and say why, as tests/node/test_netns_mdns.py does."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and project_machine():  # xfail reports are skips
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped on the project's own machine kind (Debian, root), where every test "
                           f"must run: {reason}")
