"""CLI of the manager role: ``manager transfer``, ``manager owner-key``, ``leave``, ``dissolve``.

Every command talks to the node running on ``--data-dir`` (control socket); exit codes follow
node/cli.py (0 ok, 1 failed, refused or unreadable input, 2 usage only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cli() -> ModuleType:
    """node.cli as it is running: under ``python -m node.cli`` that is ``__main__``, and its
    CliError (not a second import's) is the one its main() catches."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is not None and spec is not None and spec.name == "node.cli":
        return main
    return importlib.import_module("node.cli")


def CliError(msg: str, code: int = 1) -> Exception:
    err: Exception = _cli().CliError(msg, code)
    return err


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    _cli()._data_dir_arg(p)


def node_request(args: argparse.Namespace, cmd: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = _cli().node_request(args, cmd)
    return reply


def add_parsers(sub: Any) -> dict[str, Any]:
    p = sub.add_parser("manager", help="the federation's manager role (Raft council)")
    msub = p.add_subparsers(dest="manager_command", metavar="SUBCOMMAND")
    pt = msub.add_parser("transfer", help="make the manager hand over leadership now")
    _data_dir_arg(pt)
    pt.add_argument("--to", default=None, metavar="PEER_ID",
                    help="council member to hand over to (default: the next by score)")
    pk = msub.add_parser("owner-key", help="create a federation owner key pair (Ed25519 PEM)")
    pk.add_argument("--out", required=True, metavar="FILE|pkcs11:URI",
                    help="private key file to create (the public key goes to FILE.pub); or an RFC 7512 "
                         "pkcs11: URI naming the token and object: the pair is made (or found) in the "
                         "token and only the public key is written, to --pub (docs/keys.md)")
    pk.add_argument("--pub", type=Path, default=None, metavar="FILE",
                    help="with a pkcs11: URI: where to write the public key (default federation-owner.pub)")

    p = sub.add_parser("leave", help="leave the federation gracefully, then stop the node")
    _data_dir_arg(p)
    p.add_argument("--reason", default="operator request")

    p = sub.add_parser("dissolve", help="dissolve the federation (signed by the owner key)")
    _data_dir_arg(p)
    p.add_argument("--owner-key", required=True, metavar="FILE|pkcs11:URI",
                   help="the federation owner's Ed25519 private key (PEM), or a pkcs11: URI naming it "
                        "in a token (PIN from pin-source=file:PATH|env:NAME or $ENCLAVE_SWARM_PKCS11_PIN)")
    return {"manager": cmd_manager, "leave": cmd_leave, "dissolve": cmd_dissolve}


def cmd_manager(args: argparse.Namespace) -> int:
    if args.manager_command == "transfer":
        req: dict[str, Any] = {"cmd": "manager-transfer"}
        if args.to is not None:
            if not args.to.strip():  # `--to "$UNSET"` must not hand over to the default successor
                raise CliError("--to needs a peer id", EXIT_USAGE)
            req["to"] = args.to
        reply = node_request(args, req)
        print(f"manager is now {reply.get('manager')}")
        return EXIT_OK
    if args.manager_command == "owner-key":
        if args.out.startswith("pkcs11:"):
            return _owner_key_in_token(args.out, args.pub or Path("federation-owner.pub"))
        return _owner_key(Path(args.out))
    raise CliError("usage: enclave-swarm manager {transfer,owner-key} ...", EXIT_USAGE)


def _owner_key(out: Path) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from node.datadir import DataDirError, write_new

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path = out.with_name(out.name + ".pub")
    try:
        write_new(out, priv, 0o600)
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # no such directory, not writable, ...: one line, not a traceback
        raise CliError(f"{out}: {exc.strerror or exc}") from None
    try:
        write_new(pub_path, pub, 0o644)
    except (DataDirError, OSError) as exc:
        # Never leave a private key whose public half is another key's (an operator would
        # provision the wrong one), nor one without its public half: take it back.
        out.unlink()
        if isinstance(exc, DataDirError):
            raise CliError(str(exc)) from None
        raise CliError(f"{pub_path}: {exc.strerror or exc}") from None
    print(f"owner key {out}; provision {pub_path} as <data dir>/federation-owner.pub on every node")
    return EXIT_OK


def _open_owner_token(uri: str, *, create: bool) -> Any:
    """The owner key pair named by ``uri`` in its token (node/keys/pkcs11.py)."""
    from node.keys.base import KeyProviderError
    from node.keys.config import token_config_from_uri
    from node.keys.pkcs11 import Pkcs11Keys

    try:
        return Pkcs11Keys(token_config_from_uri(uri), create=create, sealing=False)
    except KeyProviderError as exc:
        raise CliError(str(exc), EXIT_FAIL) from None


def _owner_key_in_token(uri: str, pub_path: Path) -> int:
    from cryptography.hazmat.primitives import serialization

    from node.datadir import DataDirError, write_new

    keys = _open_owner_token(uri, create=True)
    try:
        pub = keys.identity.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    finally:
        keys.close()
    try:
        write_new(pub_path, pub, 0o644)
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{pub_path}: {exc.strerror or exc}") from None
    print(f"owner key in token {keys.config.token!r} (object {keys.config.identity_label!r}); provision "
          f"{pub_path} as <data dir>/federation-owner.pub on every node")
    return EXIT_OK


def cmd_leave(args: argparse.Namespace) -> int:
    from node.control import BadAnswer, NotRunning, request

    dd = _cli()._data_dir(args)
    try:
        reply = request(dd.socket_path, {"cmd": "leave", "reason": args.reason}, timeout_s=45)
    except NotRunning:
        raise CliError(f"no node is running on {dd.path}") from None
    except BadAnswer as exc:
        raise CliError(f"cannot talk to a node on {dd.path}: {exc}") from None
    if not reply.get("ok"):
        raise CliError(str(reply.get("error", "leave failed")))
    print("left the federation; the node is stopping")
    return EXIT_OK


def load_owner_private_key(ref: str | Path) -> Any:
    """The owner's key: a PEM file, or (``pkcs11:`` URI) a key in a token that signs there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if str(ref).startswith("pkcs11:"):
        return _open_owner_token(str(ref), create=False).identity
    path = Path(ref)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", EXIT_FAIL) from None
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: not a PEM private key ({exc})", EXIT_FAIL) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CliError(f"{path}: the owner key must be Ed25519", EXIT_FAIL)
    return key


def cmd_dissolve(args: argparse.Namespace) -> int:
    from node.manager_wire import dissolve_payload

    key = load_owner_private_key(args.owner_key)
    info = node_request(args, {"cmd": "manager-info"})
    fed = (info.get("consensus") or {}).get("federation")
    if not fed:
        raise CliError("the node does not know its federation yet (not admitted)")
    issued = int(time.time())
    sig = key.sign(dissolve_payload(fed, issued))
    node_request(args, {"cmd": "dissolve", "federation": fed, "issued_at": issued,
                        "signature": sig.hex()})
    print(f"federation {fed} dissolved: nodes erase their sealed data and exit")
    return EXIT_OK
