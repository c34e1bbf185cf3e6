"""The chaos checkers' planted bug (node/manager.py, PLANT_ENV) acts only in a node that admits
the simulated TEE: a production profile ignores the variable and says so."""

from pathlib import Path

import pytest

from node.config import NodeConfig
from node.manager import PLANT_ENV, ManagerRole
from node.manager_settings import ManagerSettings
from node.testing import make_agent


@pytest.mark.parametrize("profile, honoured", [("local_test", True), ("lan", False), ("wan", False)])
def test_the_planted_bug_is_honoured_only_by_a_test_federation(tmp_path: Path, monkeypatch, caplog,
                                                               profile, honoured) -> None:
    monkeypatch.setenv(PLANT_ENV, "apply-before-commit")
    agent = make_agent(tmp_path, "n0")
    agent.config = NodeConfig.for_profile(profile) if profile != "local_test" else agent.config
    role = ManagerRole(agent, tmp_path / "n0", ManagerSettings.for_profile("local_test"))
    assert (role._plant == "apply-before-commit") is honoured
    assert ("ignoring " + PLANT_ENV in caplog.text) is not honoured
