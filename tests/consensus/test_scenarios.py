"""Run every scenario file in testdata/ (see scenario.py for the format; REWRITE=1 rewrites)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.consensus.scenario import run_file

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scenarios() -> None:
    names = {f.stem for f in FILES}
    for required in ("election", "prevote_partition", "replication", "leader_transfer",
                     "snapshot_catchup", "confchange_add_remove", "checkquorum_stepdown"):
        assert required in names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario(path: Path) -> None:
    for command, expected, actual in run_file(path):
        assert actual == expected, (
            f"{path.name}: `{command}`\n--- expected\n" + "\n".join(expected)
            + "\n--- actual\n" + "\n".join(actual)
            + "\n(run with REWRITE=1 to accept the new output)"
        )
