"""`enclave-swarm completion SHELL`: the script is generated from the CLI's own parser, and bash,
given it, completes subcommands, nested subcommands and flags."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "node.cli"]


def _script(shell: str) -> str:
    r = subprocess.run([*CLI, "completion", shell], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _complete(script: str, words: list[str]) -> set[str]:
    """What bash offers for the last of ``words`` after sourcing ``script``."""
    line = " ".join(["enclave-swarm", *words])
    prog = (f"{script}\nCOMP_WORDS=(enclave-swarm {' '.join(words)}); COMP_CWORD={len(words)}; "
            f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; "
            f"_shtab_enclave_swarm enclave-swarm {words[-1]!r} {(['enclave-swarm', *words])[-2]!r}; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {w.strip() for w in r.stdout.split()}


def test_bash_completes_commands_subcommands_and_flags():
    script = _script("bash")
    assert "complete" in script and "_shtab_enclave_swarm" in script
    assert _complete(script, ["jo"]) == {"jobs"}
    assert {"submit", "status", "stop"} <= _complete(script, ["s"])
    assert "describe" in _complete(script, ["jobs", "d"])
    assert "verify" in _complete(script, ["attest", "v"])
    assert "--wait" in _complete(script, ["submit", "--w"])


def test_every_shell_gets_a_script_and_an_unknown_one_is_a_usage_error():
    for shell in ("zsh", "tcsh"):
        assert "enclave-swarm" in _script(shell)
    r = subprocess.run([*CLI, "completion", "fish"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr
