"""Fail early (issue 17): an option whose needs are missing is refused before the run starts,
with exit 2 and the install hint, never after the simulation with a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import cli, needs

ROOT = Path(__file__).resolve().parents[2]

# A real interpreter in which matplotlib cannot be imported (as if the plot extra were not
# installed): ``None`` in sys.modules makes every import of it fail with ModuleNotFoundError.
_WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "
                       "from sim.cli import main; sys.exit(main(sys.argv[1:]))")


def _sim_without_matplotlib(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.process
@pytest.mark.parametrize("scenario", ["steady", "tasks"])
def test_plot_without_matplotlib_is_refused_before_the_run(tmp_path: Path, scenario: str) -> None:
    png, js = tmp_path / "r.png", tmp_path / "r.json"
    proc = _sim_without_matplotlib("--scenario", scenario, "--nodes", "20", "--seed", "3",
                                   "--plot", str(png), "--json", str(js), "--no-progress",
                                   "--engine", "cpython")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "matplotlib" in proc.stderr and "pip install" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "SEED=" not in proc.stdout  # refused before the run: nothing simulated
    assert not js.exists() and not png.exists()


@pytest.mark.process
def test_the_same_interpreter_runs_when_no_plot_is_asked(tmp_path: Path) -> None:
    js = tmp_path / "r.json"
    proc = _sim_without_matplotlib("--nodes", "10", "--seed", "3", "--duration-s", "2",
                                   "--liveness-deadline-s", "5", "--json", str(js),
                                   "--no-progress", "--engine", "cpython")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("SEED=3") and js.exists()


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(["--engine", "cpython", *argv])


def test_outputs_in_missing_directories_are_refused_up_front(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "nowhere" / "r.json"
    assert cli.run(_args("--nodes", "10", "--json", str(bad), "--no-progress")) == 2
    err = capsys.readouterr()
    assert "does not exist" in err.err and "SEED=" not in err.out
    assert cli.run(_args("--nodes", "10", "--plot", str(tmp_path), "--no-progress")) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "words"), [
    (["--scenario", "manager-crash", "--plot", "x.png"], "council scenarios draw no plot"),
    (["--runs", "3", "--plot", "x.png"], "without --runs"),
    (["--runs", "0"], "--runs >= 1"),
    (["--scenario", "tasks", "--runs", "2"], "one seed at a time"),
])
def test_options_the_scenario_cannot_honour_are_refused(
        argv: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.run(_args(*argv, "--no-progress")) == 2
    assert words in capsys.readouterr().err


def test_module_available_answers_without_importing() -> None:
    assert needs.module_available("json")
    assert not needs.module_available("no_such_module_enclave_swarm")
    assert not needs.module_available("no_such_parent.child")
