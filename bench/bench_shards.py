"""Shard pipeline benchmarks: throughput vs a bare AES-GCM + zfec baseline, peak RSS, repair.

    python -m bench shards
    python -m bench.bench_shards [--size-mib 128] [--rss-mib 1024] [--repair-mib 16,64,256]

1. seal+split and combine+open MB/s (plaintext bytes) against a baseline measured in the same
   run on the same core: AES-256-GCM over the whole buffer in one call, then one zfec encode
   (resp. zfec decode then one GCM decrypt) - no streaming, no chunking, no hashing. The
   pipeline must reach >= 0.7x of it.
2. peak RSS of a fresh process that streams a generated object (never held in memory) through
   seal+split to fragment files and back through combine+open; goal <= 256 MiB.
3. repair time as a function of object size: regenerate one fragment from k others (streamed
   from files), and regenerate one key share by masked resharing (independent of size).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zfec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.shards import resharing as rs
from node.shards.crypto import combine_and_open, seal_and_split

MIB = 1024 * 1024
K, N = 3, 5
RATIO_GOAL = 0.7
RSS_GOAL_MIB = 256
ROOT = Path(__file__).resolve().parents[1]


class Null:
    def write(self, data: bytes) -> int:
        return len(data)


class Generated:
    """``size`` pseudo-random bytes produced on demand, O(1 MiB) memory."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = hashlib.shake_256(b"bench").digest(MIB)
        self._counter = 0
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if not self._pending:
            self._pending = self._counter.to_bytes(8, "big") + self._block[8:]
            self._counter += 1
        take = min(size if size >= 0 else len(self._pending), len(self._pending), self._left)
        out, self._pending = self._pending[:take], self._pending[take:]
        self._left -= take
        return out


def peak_rss_bytes() -> int:
    """Peak RSS of this process image. VmHWM (Linux) belongs to the current address space;
    ru_maxrss would also count the parent's image that the child was forked from before exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _best(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(size: int) -> dict[str, float]:
    data = os.urandom(size)
    key, nonce = os.urandom(32), os.urandom(12)
    enc, dec = zfec.Encoder(K, N), zfec.Decoder(K, N)
    use = tuple(range(N - K, N))  # includes parity: real decoding in both

    def baseline_seal() -> list[bytes]:
        ct = AESGCM(key).encrypt(nonce, data, None)
        block = -(-len(ct) // K)
        padded = memoryview(ct + bytes(block * K - len(ct)))
        return enc.encode(tuple(padded[i * block : (i + 1) * block] for i in range(K)))

    blocks = baseline_seal()
    ct_len = size + 16

    def baseline_open() -> None:
        primary = dec.decode(tuple(blocks[i] for i in use), use)
        AESGCM(key).decrypt(nonce, b"".join(primary)[:ct_len], None)

    holder: dict[str, object] = {}

    def pipeline_seal() -> None:
        sinks = [io.BytesIO() for _ in range(N)]
        holder["sealed"] = seal_and_split(io.BytesIO(data), sinks, k=K, n=N)
        holder["fragments"] = [s.getbuffer() for s in sinks]

    pipeline_seal()
    sealed = holder["sealed"]
    fragments = holder["fragments"]

    def pipeline_seal_null() -> None:
        seal_and_split(io.BytesIO(data), [Null() for _ in range(N)], k=K, n=N)

    def pipeline_open() -> None:
        combine_and_open(
            sealed.params,
            {i: io.BytesIO(fragments[i]) for i in use},  # type: ignore[index]
            sealed.shares[:K],
            Null(),
        )  # type: ignore[attr-defined]

    t = {
        "baseline_seal_s": _best(baseline_seal),
        "pipeline_seal_s": _best(pipeline_seal_null),
        "baseline_open_s": _best(baseline_open),
        "pipeline_open_s": _best(pipeline_open),
    }
    mb = size / 1e6
    return {
        "size_mib": size / MIB,
        "baseline_seal_MBps": mb / t["baseline_seal_s"],
        "pipeline_seal_MBps": mb / t["pipeline_seal_s"],
        "seal_ratio": t["baseline_seal_s"] / t["pipeline_seal_s"],
        "baseline_open_MBps": mb / t["baseline_open_s"],
        "pipeline_open_MBps": mb / t["pipeline_open_s"],
        "open_ratio": t["baseline_open_s"] / t["pipeline_open_s"],
    }


def rss_probe(size: int) -> dict[str, object]:
    """Runs in the child: stream ``size`` bytes through the whole pipeline via fragment files."""
    start_rss = peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as d:
        paths = [Path(d) / f"f{i}" for i in range(N)]
        sinks = [open(p, "wb") for p in paths]  # noqa: SIM115
        t0 = time.perf_counter()
        try:
            sealed = seal_and_split(Generated(size), sinks, k=K, n=N)
        finally:
            for s in sinks:
                s.close()
        t1 = time.perf_counter()
        seal_rss = peak_rss_bytes()
        files = {i: open(paths[i], "rb") for i in range(N - K, N)}  # noqa: SIM115
        try:
            written = combine_and_open(sealed.params, files, sealed.shares[:K], Null())
        finally:
            for f in files.values():
                f.close()
        t2 = time.perf_counter()
    return {
        "size_mib": size / MIB,
        "start_rss_mib": start_rss / MIB,
        "peak_rss_after_seal_mib": seal_rss / MIB,
        "peak_rss_mib": peak_rss_bytes() / MIB,
        "seal_split_s": t1 - t0,
        "combine_open_s": t2 - t1,
        "round_trip_ok": written == size,
    }


def peak_rss(size: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_shards", "--rss-probe", str(size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def repair(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-shards-repair-") as d:
        paths = [Path(d) / f"f{i}" for i in range(N)]
        sinks = [open(p, "wb") for p in paths]  # noqa: SIM115
        try:
            sealed = seal_and_split(Generated(size), sinks, k=K, n=N)
        finally:
            for s in sinks:
                s.close()
        out: dict[str, float] = {"size_mib": size / MIB}
        for label, target in (("parity", N - 1), ("primary", 0)):
            sources = [i for i in range(N) if i != target][:K]
            files = {i: open(paths[i], "rb") for i in sources}  # noqa: SIM115
            t0 = time.perf_counter()
            with open(Path(d) / "new", "wb") as new:
                rs.regenerate_fragment(sealed.layout, files, target, new, sealed.params.fragment_hashes)
            out[f"fragment_{label}_s"] = time.perf_counter() - t0
            for f in files.values():
                f.close()
            os.unlink(Path(d) / "new")
    shares = sealed.shares
    helpers = [1, 2, 3]
    t0 = time.perf_counter()
    seeds = {(a, b): rs.new_mask_seed() for a in helpers for b in helpers if a < b}
    contributions = {}
    for x in helpers:
        mine = {o: seeds[(min(x, o), max(x, o))] for o in helpers if o != x}
        mask = rs.helper_mask(x, mine, b"bench-session-01", helpers)
        contributions[x] = rs.build_contribution(shares[x - 1], helpers, 5, mask)
    new = rs.combine_contributions(contributions, helpers, 5)
    out["share_s"] = time.perf_counter() - t0
    assert new.matches(shares[4])
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--rss-probe"]:
        print(json.dumps(rss_probe(int(argv[1]))))
        return 0
    opts = {"--size-mib": "128", "--rss-mib": "1024", "--repair-mib": "16,64,256"}
    for i in range(0, len(argv) - 1, 2):
        if argv[i] not in opts:
            print(f"unknown option {argv[i]}", file=sys.stderr)
            return 2
        opts[argv[i]] = argv[i + 1]
    ok = True
    print(f"k={K} n={N}, 1 MiB chunks/stripes, single thread")
    t = throughput(int(float(opts["--size-mib"]) * MIB))
    print(f"\nthroughput over {t['size_mib']:.0f} MiB in memory (best of 3):")
    print(
        f"  seal+split    {t['pipeline_seal_MBps']:8.1f} MB/s"
        f"  baseline {t['baseline_seal_MBps']:8.1f} MB/s"
        f"  ratio {t['seal_ratio']:.2f}x (goal >= {RATIO_GOAL}x)"
    )
    print(
        f"  combine+open  {t['pipeline_open_MBps']:8.1f} MB/s"
        f"  baseline {t['baseline_open_MBps']:8.1f} MB/s"
        f"  ratio {t['open_ratio']:.2f}x (goal >= {RATIO_GOAL}x)"
    )
    ok &= t["seal_ratio"] >= RATIO_GOAL and t["open_ratio"] >= RATIO_GOAL
    r = peak_rss(int(float(opts["--rss-mib"]) * MIB))
    print(
        f"\npeak RSS streaming {r['size_mib']:.0f} MiB (generated) through seal+split to files and "
        f"combine+open back, fresh process:"
    )
    print(
        f"  peak RSS {r['peak_rss_mib']:.1f} MiB (goal <= {RSS_GOAL_MIB} MiB); at start "
        f"{r['start_rss_mib']:.1f} MiB; after seal "
        f"{r['peak_rss_after_seal_mib']:.1f} MiB; seal+split {r['seal_split_s']:.1f} s, "
        f"combine+open {r['combine_open_s']:.1f} s; "
        f"round trip {'ok' if r['round_trip_ok'] else 'FAILED'}"
    )
    ok &= float(r["peak_rss_mib"]) <= RSS_GOAL_MIB and bool(r["round_trip_ok"])  # type: ignore[arg-type]
    print("\nrepair (fragment from k=3 files, streamed; key share by masked resharing):")
    print(
        f"  {'object MiB':>10}  {'parity frag s':>13}  {'primary frag s':>14}"
        f"  {'frag MB/s':>9}  {'share ms':>8}"
    )
    for size_mib in opts["--repair-mib"].split(","):
        rp = repair(int(float(size_mib) * MIB))
        print(
            f"  {rp['size_mib']:>10.0f}  {rp['fragment_parity_s']:>13.3f}"
            f"  {rp['fragment_primary_s']:>14.3f}"
            f"  {rp['size_mib'] * MIB / 1e6 / rp['fragment_parity_s']:>9.1f}"
            f"  {rp['share_s'] * 1e3:>8.2f}"
        )
    print(f"\nresult: {'all goals met' if ok else 'GOAL MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
