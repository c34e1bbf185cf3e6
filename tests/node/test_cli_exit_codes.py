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
