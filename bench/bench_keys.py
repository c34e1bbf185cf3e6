"""Node keys in a PKCS#11 token (SoftHSM2) against keys in files, each pair in the same run.

1. sign: Ed25519 signatures per second of a 200-byte message (a score record's size) through
   SoftHSM2 (``CKM_EDDSA``, node/keys/pkcs11.py, the node's own code path and lock) against
   the in-process ``cryptography`` signer (the file backend); alternating one-second windows.
2. connect: the attested connect time of two in-process nodes (from the dial until both hold
   the other as attested; bench/bench_overlay.py's ``connect`` measure), both nodes with their
   identity in a token against both with file keys, alternating round by round. Goal: token
   <= 1.1x file (median).

Usage::

    python -m bench.bench_keys                 # both parts
    python -m bench.bench_keys --rounds 5 --only sign
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.bench_overlay import attested_connect_s
from node.keys.pkcs11 import Pkcs11Keys
from node.keys.softhsm import SoftHsm, softhsm_missing

ROUNDS = 21
SIGN_WINDOWS = 3
SIGN_WINDOW_S = 1.0
MESSAGE = bytes(range(200))
PARTS = ("sign", "connect")


def _rate(sign, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            sign(MESSAGE)
        n += 50
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def bench_sign(token: Pkcs11Keys) -> None:
    file_key = Ed25519PrivateKey.generate()
    tok, fil = [], []
    for _ in range(SIGN_WINDOWS):
        tok.append(_rate(token.identity.sign, SIGN_WINDOW_S))
        fil.append(_rate(file_key.sign, SIGN_WINDOW_S))
    t, f = statistics.median(tok), statistics.median(fil)
    print(f"sign  Ed25519, {len(MESSAGE)}-byte message, median of {SIGN_WINDOWS} x {SIGN_WINDOW_S:.0f} s:")
    print(f"      SoftHSM2 (PKCS#11 CKM_EDDSA)  {t:10,.0f} signatures/s  ({1e6 / t:6.1f} us each)")
    print(f"      cryptography, in process      {f:10,.0f} signatures/s  ({1e6 / f:6.1f} us each)")
    print(f"      ratio token/file: {t / f:.3f}x the rate ({f / t:.1f}x slower per signature)")


def bench_connect(tmp: Path, rounds: int, keys: tuple[Pkcs11Keys, Pkcs11Keys]) -> None:
    tok: list[float] = []
    fil: list[float] = []

    async def run() -> None:
        for i in range(rounds):
            tok.append(await attested_connect_s(tmp, 2 * i, keys))
            fil.append(await attested_connect_s(tmp, 2 * i + 1))

    trio.run(run)
    # The first round of each arm warms imports and caches: reported, not counted.
    t, f = statistics.median(tok[1:] or tok), statistics.median(fil[1:] or fil)
    print(f"connect  attested, both nodes, median of {max(1, rounds - 1)} rounds (alternating):")
    print(f"      token keys (SoftHSM2)  {t * 1000:7.2f} ms   (min {min(tok) * 1000:.2f})")
    print(f"      file keys              {f * 1000:7.2f} ms   (min {min(fil) * 1000:.2f})")
    print(f"      ratio token/file: {t / f:.3f}x  (goal <= 1.1x)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_keys", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"connect rounds per arm ({ROUNDS})")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    why = softhsm_missing()
    if why is not None:
        print(f"bench_keys: needs SoftHSM2: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as d:
        tmp = Path(d)
        hsm = SoftHsm(tmp / "softhsm")
        hsm.activate()
        ta, tb = hsm.init_token("a"), hsm.init_token("b")  # both before the module loads
        keys = (Pkcs11Keys(ta, create=True), Pkcs11Keys(tb, create=True))
        try:
            if "sign" in parts:
                bench_sign(keys[0])
            if "connect" in parts:
                bench_connect(tmp, args.rounds, keys)
        finally:
            for k in keys:
                k.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
