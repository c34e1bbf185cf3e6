"""``enclave-swarm chaos``: usage errors exit 2 before anything starts."""

from __future__ import annotations

import pytest

from node.cli import main


@pytest.mark.parametrize("argv", [
    ["chaos", "--nodes", "2", "--out", "x"],
    ["chaos", "--faults", "flood", "--out", "x"],
    ["chaos", "--duration-s", "15", "--out", "x"],
    ["chaos", "--nodes", "5"],  # --out is required
])
def test_usage_errors_exit_2(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "x").exists()  # nothing was started or written
    err = capsys.readouterr().err
    assert "enclave-swarm" in err or "usage" in err
