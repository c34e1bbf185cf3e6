"""Run the streaming pipeline over a generated stream in a fresh process and report peak RSS.

    python -m tests.shards.memprobe SIZE_MIB WORKDIR  →  one JSON line on stdout

The plaintext is generated on the fly (never held in memory): a 1 MiB random block with a
chunk counter stamped in, hashed as it is produced so the round trip can be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
from pathlib import Path

from node.shards.crypto import combine_and_open, seal_and_split

MIB = 1024 * 1024


class Generated:
    """A reader of ``size`` deterministic pseudo-random bytes that keeps O(1 MiB) in memory."""

    def __init__(self, size: int, seed: bytes = b"memprobe") -> None:
        self._left = size
        self._block = hashlib.shake_256(seed).digest(MIB)
        self._counter = 0
        self._pending = b""
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if not self._pending:
            self._pending = self._counter.to_bytes(8, "big") + self._block[8:]
            self._counter += 1
        take = min(size if size >= 0 else len(self._pending), len(self._pending), self._left)
        out, self._pending = self._pending[:take], self._pending[take:]
        self._left -= take
        self.sha256.update(out)
        return out


class HashSink:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


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


def run(size: int, workdir: Path, k: int = 3, n: int = 5, combine: bool = True) -> dict[str, object]:
    # warm up every code path on a small object so imports and allocator pools are in the baseline
    warm = [open(os.devnull, "wb") for _ in range(n)]
    seal_and_split(Generated(3 * MIB), warm, k=k, n=n)
    for f in warm:
        f.close()
    baseline = peak_rss_bytes()
    source = Generated(size)
    paths = [workdir / f"fragment.{i}" for i in range(n)]
    sinks = [open(p, "wb") if combine else open(os.devnull, "wb") for p in paths]
    try:
        sealed = seal_and_split(source, sinks, k=k, n=n)
    finally:
        for s in sinks:
            s.close()
    after_seal = peak_rss_bytes()
    result: dict[str, object] = {
        "size": size,
        "baseline_rss": baseline,
        "after_seal_rss": after_seal,
    }
    if combine:
        sink = HashSink()
        use = list(range(n - k, n))  # parity fragments included: real decoding work
        files = {i: open(paths[i], "rb") for i in use}
        try:
            combine_and_open(sealed.params, files, sealed.shares[:k], sink)
        finally:
            for f in files.values():
                f.close()
        result.update(
            after_combine_rss=peak_rss_bytes(),
            round_trip=sink.sha256.digest() == source.sha256.digest() and sink.size == size,
        )
    return result


def main(argv: list[str]) -> int:
    size = int(float(argv[0]) * MIB)
    combine = len(argv) < 3 or argv[2] != "--seal-only"
    print(json.dumps(run(size, Path(argv[1]), combine=combine)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
