"""Where a node's private keys live: one small interface, two backends (files, PKCS#11).

See node/keys/base.py for the interface and docs/keys.md for the operator's view.
"""

from node.keys.base import IdentityKey, KeyProvider, KeyProviderError, KeyUnavailable, exports_private_key

__all__ = ["IdentityKey", "KeyProvider", "KeyProviderError", "KeyUnavailable", "exports_private_key"]
