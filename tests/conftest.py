from __future__ import annotations

import pytest
import trio.testing


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
