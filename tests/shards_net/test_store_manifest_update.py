"""ShardStore.update_manifest: a holder takes a newer revision of its shard's manifest only."""

from __future__ import annotations

import dataclasses
import io
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.shards.manifest import PlacementEntry, sign_manifest
from node.shards.store import ShardStore, StoreError
from overlay.errors import RemoteProtocolError
from tests.shards.helpers import signed_object


def _store(tmp_path):
    return ShardStore(
        tmp_path,
        os.urandom(32),
        quota_bytes=1 << 20,
        receipt_key=Ed25519PrivateKey.generate(),
        holder_peer_id="12D3KooWpeer1",
    )


def test_newer_revision_replaces_only_placement_and_revision(tmp_path):
    owner, sealed, fragments, manifest, frame = signed_object()
    store = _store(tmp_path)
    store.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])
    moved = manifest.with_placement(
        [(p.index, "12D3KooWnew" if p.index == 3 else p.peer_id) for p in manifest.placement]
    )
    new_frame = sign_manifest(moved, owner)
    used = store.health().used_bytes
    assert store.update_manifest(new_frame, 1) is True
    assert store.manifest(manifest.object_id, 1).revision == 1
    assert store.manifest_frame(manifest.object_id, 1) == new_frame
    assert store.health().used_bytes == used + len(new_frame) - len(frame)
    store.verify(manifest.object_id, 1)  # the shard still verifies against the new manifest
    assert store.update_manifest(frame, 1) is False  # an older revision is ignored
    assert store.update_manifest(new_frame, 1) is False


def test_a_changed_hash_size_or_owner_is_refused(tmp_path):
    owner, sealed, fragments, manifest, frame = signed_object()
    store = _store(tmp_path)
    store.put(frame, 1, io.BytesIO(fragments[1]), sealed.shares[1])
    hashes = list(manifest.fragment_hashes)
    hashes[1] = bytes(32)
    forged = dataclasses.replace(manifest, revision=1, fragment_hashes=tuple(hashes))
    with pytest.raises(StoreError, match="not a revision"):
        store.update_manifest(sign_manifest(forged, owner), 1)
    other = Ed25519PrivateKey.generate()
    from node.shards.manifest import raw_public_key

    stolen = dataclasses.replace(
        manifest,
        revision=1,
        owner=raw_public_key(other),
        placement=(*manifest.placement[:4], PlacementEntry(4, "12D3KooWx")),
    )
    with pytest.raises(StoreError):
        store.update_manifest(sign_manifest(stolen, other), 1)
    with pytest.raises(RemoteProtocolError):
        store.update_manifest(frame[:-1] + bytes([frame[-1] ^ 1]), 1)
    assert store.manifest_frame(manifest.object_id, 1) == frame
