"""Data sovereignty: encrypted, erasure-coded, key-shared objects (see docs/shards.md).

- :mod:`node.shards.crypto`     the safe entry: ``seal_and_split`` / ``combine_and_open``
- :mod:`node.shards.gf256`      GF(2^8) and Shamir k-of-n sharing of the data key
- :mod:`node.shards.manifest`   the owner-signed CBOR manifest
- :mod:`node.shards.messages`   shard-* wire messages for the transfer protocol
- :mod:`node.shards.store`      a holder's sealed-at-rest shard store (blocking file I/O)
- :mod:`node.shards.resharing`  share and fragment regeneration without reconstruction
- :mod:`node.shards.placement`  pure anti-affinity placement
"""

from node.shards.crypto import (
    FragmentCorrupt,
    IntegrityError,
    ObjectParams,
    SealedObject,
    ShareCorrupt,
    combine_and_open,
    seal_and_split,
)
from node.shards.gf256 import KeyShare

__all__ = [
    "FragmentCorrupt",
    "IntegrityError",
    "KeyShare",
    "ObjectParams",
    "SealedObject",
    "ShareCorrupt",
    "combine_and_open",
    "seal_and_split",
]
