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


def _subcommands(parser) -> dict[tuple[str, ...], list[str]]:  # type: ignore[no-untyped-def]
    """Every subcommand path of ``parser`` -> the names under it, walked from the parser itself
    (so a command added later is covered without touching this test)."""
    import argparse

    out: dict[tuple[str, ...], list[str]] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                out[path] = list(action.choices)
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(parser, ())
    return out


def test_bash_accepts_the_script_and_completes_every_subcommand():
    from node.cli import build_parser

    script = _script("bash")
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    tree = _subcommands(build_parser())
    top = set(tree[()])
    assert {"init", "run", "status", "stop", "attest", "manager", "put", "get", "ls", "rm",
            "submit", "jobs", "budget", "sim", "completion", "demo", "leave", "dissolve",
            "reload-policy"} <= top
    assert set(tree[("manager",)]) == {"transfer", "owner-key"}
    assert {"ls", "describe", "logs", "cancel"} <= set(tree[("jobs",)])
    # the empty word offers every command; each command's first letters offer it
    assert _complete(script, [""]) >= top
    for path, names in tree.items():
        for name in names:
            assert name in _complete(script, [*path, name[:2]]), (path, name)
    # and compgen, as a completing shell calls it, sees the function registered for the command
    r = subprocess.run(["bash", "-c", f"{script}\ncomplete -p enclave-swarm"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "_shtab_enclave_swarm" in r.stdout, r.stderr
