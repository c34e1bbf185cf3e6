"""The command line's exit codes: 0 ok, 1 failed or refused (unreadable input included), 2 usage only."""

from __future__ import annotations


def test_input_files_that_cannot_be_read_fail_with_1_not_2(tmp_path, capsys):
    """Exit 2 is for usage errors only: a missing or unparsable input file is a failure (1),
    with one line on stderr, before any node is asked anything."""
    from node.cli import main

    not_pem = tmp_path / "key.pem"
    not_pem.write_text("not a key")
    for argv in (["dissolve", "--owner-key", str(tmp_path / "missing.pem"), "--data-dir", str(tmp_path)],
                 ["dissolve", "--owner-key", str(not_pem), "--data-dir", str(tmp_path)],
                 ["put", str(tmp_path / "missing.bin"), "--data-dir", str(tmp_path)],
                 ["attest", "verify", str(tmp_path / "missing.bin")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("enclave-swarm: ") and err.count("\n") == 1, (argv, err)


def test_sim_output_that_cannot_be_written_fails_with_1_before_the_run(tmp_path, capsys):
    """`sim --json/--plot` into a directory that does not exist: one line, exit 1, and no
    simulation run first (it once ran to the end, then died with a traceback)."""
    from node.cli import main

    for flag in ("--json", "--plot"):
        argv = ["sim", "--nodes", "5", "--duration-s", "1", "--no-progress", "--seed", "1",
                flag, str(tmp_path / "missing" / "out")]
        assert main(argv) == 1, flag
        captured = capsys.readouterr()
        assert "SEED=" not in captured.out  # refused before the run
        assert captured.err == f"enclave-swarm: {tmp_path / 'missing' / 'out'}: no such directory\n"


def test_sim_bad_values_stay_usage_errors(capsys):
    from node.cli import main

    assert main(["sim", "--nodes", "1", "--seed", "1", "--no-progress"]) == 2
    assert main(["sim", "--nodes", "notanumber"]) == 2
    capsys.readouterr()
