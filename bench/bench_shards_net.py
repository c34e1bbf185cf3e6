"""End-to-end shard put / get across loopback nodes vs raw py-libp2p stream throughput, and
repair time vs object size.

    python -m bench shards_net
    python -m bench.bench_shards_net --size-mib 64 --raw-mib 64 --repair-mib 4,16,64

One process, in-process nodes on loopback (owner + 5 holders for 3-of-5, + 1 spare for
repairs), all sharing one Python interpreter (so one core for the whole federation, GIL). In
the same run, and between two of the same nodes, the baseline sends ``raw-mib`` over one raw
py-libp2p stream (256 KiB writes, no framing, no acks) to a handler that discards it.

Put throughput is plaintext bytes per second of wall time, from the file on disk to five
holders having acknowledged durable, sealed shards (seal + split + 5 parallel transfers of
n/k = 5/3 of the data, each chunk verified and sealed at rest on receipt). Get is plaintext
bytes per second from the request to the renamed output file (3 parallel fetches, verify,
combine, decrypt). Repair: the owner regenerates one holder's shard onto the spare node
(k fragments fetched, one re-encoded, masked key-share regeneration, manifest re-signed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

PROTO = "/enclave-swarm/bench-raw/1.0.0"
WRITE = 256 * 1024


def _tests_path() -> None:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _write_file(path: Path, mib: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(block[i:] + block[:i])


async def _raw_mb_s(sender, receiver, mib: int) -> float:  # type: ignore[no-untyped-def]
    total = mib << 20
    done = trio.Event()
    got = 0

    async def sink(stream):  # type: ignore[no-untyped-def]
        nonlocal got
        while got < total:
            data = await stream.read(WRITE)
            if not data:
                break
            got += len(data)
        done.set()

    receiver.host.set_stream_handler(PROTO, sink)
    stream = await sender.host.new_stream(receiver.host.get_id(), [PROTO])
    payload = os.urandom(WRITE)
    t = time.perf_counter()
    for _ in range(total // WRITE):
        await stream.write(payload)
    await done.wait()
    dt = time.perf_counter() - t
    await stream.close()
    return mib * 1.048576 / dt


async def _run(args: argparse.Namespace, tmp: Path) -> list[str]:
    _tests_path()
    from node.shards import service as shard_service
    from tests.netutil import fully_attested, make_agent
    from tests.shards_net.helpers import shard_config

    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        agents: list[Any] = []
        svcs: list[Any] = []
        for i in range(7):
            boot = (agents[0].full_addrs()[0],) if agents else ()
            a = make_agent(tmp, f"n{i}", bootstrap=boot, config=shard_config())
            svcs.append(
                shard_service.attach(
                    a, tmp / f"n{i}", quota_bytes=1 << 40, repair_grace_s=1e9, message_timeout_s=60.0
                )
            )
            await nursery.start(a.run)
            agents.append(a)
        while not fully_attested(agents):
            await trio.sleep(0.05)
        await trio.sleep(1.0)
        owner = svcs[0]
        # Placement picks 5 of the 6 attested peers; the one left out is the repair target.
        raw = []
        put_r, get_r = [], []
        src = tmp / "object.bin"
        _write_file(src, args.size_mib)
        for rnd in range(args.rounds):
            raw.append(await _raw_mb_s(agents[0], agents[1], args.raw_mib))
            t = time.perf_counter()
            res = await owner.put(src, n=5, k=3)
            put_r.append(args.size_mib * 1.048576 / (time.perf_counter() - t))
            out = tmp / "out.bin"
            t = time.perf_counter()
            await owner.get(bytes.fromhex(res["object_id"]), out)
            get_r.append(args.size_mib * 1.048576 / (time.perf_counter() - t))
            out.unlink()
            await owner.rm(bytes.fromhex(res["object_id"]))
            lines.append(
                f"round {rnd + 1}: raw {raw[-1]:.1f} MB/s, put {put_r[-1]:.1f} MB/s, get {get_r[-1]:.1f} MB/s"
            )
        best_raw = max(raw)
        lines.append(
            f"raw py-libp2p stream, one stream, {args.raw_mib} MiB: best {best_raw:.1f} MB/s "
            f"(rounds: {', '.join(f'{x:.1f}' for x in raw)})"
        )
        for name, rates in (("put", put_r), ("get", get_r)):
            best = max(rates)
            lines.append(
                f"{name} 3-of-5, {args.size_mib} MiB: best {best:.1f} MB/s of plaintext "
                f"({(name == 'put' and 5 / 3 * best) or best:.1f} MB/s on the wire) = "
                f"{best / best_raw:.2f}x raw (goal >= 0.6x)"
            )
        for mib in args.repair_mib:
            _write_file(src, mib)
            res = await owner.put(src, n=5, k=3)
            oid = bytes.fromhex(res["object_id"])
            lost = res["holders"][4]
            t = time.perf_counter()
            info = await owner.repair(oid, lost, "benchmark")
            dt = time.perf_counter() - t
            lines.append(
                f"repair of one lost holder, {mib} MiB object: {dt:.2f} s "
                f"(shard {info['index']} → new holder, helpers x={info['helpers_x']})"
            )
            await owner.rm(oid)
        for a in agents:
            a.stop()
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_shards_net")
    p.add_argument("--size-mib", type=int, default=32)
    p.add_argument("--raw-mib", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repair-mib", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16, 32])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-shards-net-") as tmp:
        lines = trio.run(_run, args, Path(tmp))
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
