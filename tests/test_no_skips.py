"""tests/conftest.py's rule, in a pytest of its own: on the project's machine kind (Debian, root) a
skipped test is a failed one; elsewhere it stays a skip; an expected failure stays one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import project_machine

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest

def test_skip_call():
    pytest.skip("wants a tool")

@pytest.mark.skipif(True, reason="wants root")
def test_skipif():
    pass

def test_importorskip():
    pytest.importorskip("no_such_module_anywhere")

@pytest.mark.xfail(strict=True, reason="a known defect")
def test_known_defect():
    assert False

def test_ok():
    pass
'''


@pytest.mark.process
def test_a_skip_fails_on_the_project_machine_kind_and_only_there(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "tests.conftest",
                          "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
                          str(tmp_path / "test_suite.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = run.stdout
    summary = out.strip().splitlines()[-1]
    if project_machine():
        assert run.returncode == 1, out
        # a skip in the call fails the test; a skip marker acts at setup, so it is an error there
        assert "2 failed, 1 passed, 1 xfailed, 1 error" in summary, out
        lines = out.splitlines()
        for reason in ("wants a tool", "wants root", "could not import 'no_such_module_anywhere'"):
            assert any(line.startswith("skipped on the project's own machine kind (Debian, root), where "
                                       "every test must run: ") and reason in line for line in lines), out
    else:
        assert run.returncode == 0, out
        assert "1 passed, 3 skipped, 1 xfailed" in summary, out
