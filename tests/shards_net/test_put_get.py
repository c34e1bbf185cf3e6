"""put / get / rm across real in-process libp2p nodes on loopback."""

from __future__ import annotations

from tests.shards_net.helpers import shard_federation, write_random


async def test_put_then_get_bit_exact(tmp_path):
    async with shard_federation(tmp_path, 6) as (agents, svcs, _):
        owner = svcs[0]
        data = write_random(tmp_path / "in.bin", 3 * 1024 * 1024 + 17)
        res = await owner.put(tmp_path / "in.bin", n=5, k=3)
        assert agents[0].peer_id not in res["holders"] and len(set(res["holders"])) == 5
        held = [len(s.store.list_shards()) for s in svcs[1:]]
        assert held == [1] * 5
        out = tmp_path / "out.bin"
        got = await owner.get(bytes.fromhex(res["object_id"]), out)
        assert out.read_bytes() == data and got["size"] == len(data)
        # each fragment fetched (~1 MiB) is an observed rate to its holder (the scheduler's
        # bandwidth figure: docs/tasks.md, "Measurements")
        assert sum((agents[0].peers.get(h).kib_s or 0) > 0 for h in res["holders"]) >= 3
        listing = owner.ls()
        assert listing[0]["health"] == "healthy"
        assert all(h["last_verified"] for h in listing[0]["holders"])
