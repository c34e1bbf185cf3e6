"""``enclave-swarm``: the command line.

Exit codes, for every subcommand: 0 ok, 1 the operation failed or was refused (an input that
cannot be read or does not parse included), 2 usage error only. Failures print one line
``enclave-swarm: <reason>`` on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# Modules adding subcommands: each has ``add_parsers(subparsers) -> {command: handler(args)}``.
# Handlers return an exit code and may raise CliError.
CLI_EXTENSIONS: list[str] = ["node.manager_cli", "node.shards.cli", "node.tasks.cli", "node.chaos.cli"]
_EXTRA_COMMANDS: dict[str, Any] = {}


class CliError(Exception):
    def __init__(self, msg: str, code: int = EXIT_FAIL) -> None:
        super().__init__(msg)
        self.code = code


def _fail(msg: str, code: int) -> int:
    print(f"enclave-swarm: {msg}", file=sys.stderr)
    return code


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="node data directory (default: $XDG_DATA_HOME/enclave-swarm)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave-swarm",
        description="Secure enclaves on third-party hosts, federated into one attested compute unit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a node's identity and configuration")
    _data_dir_arg(p)
    p.add_argument("--profile", default=None, choices=["lan", "wan", "local-test", "local_test"],
                   help="configuration profile (default: lan on a hardware TEE host, else local-test; "
                        "wan = production: hardware TEEs only)")
    p.add_argument("--keys", default="file", metavar="file|pkcs11|pkcs11:URI",
                   help="where the private keys live: files in the data dir (default), or a PKCS#11 "
                        "token (--pkcs11-module, --token, --pin-file; or an RFC 7512 pkcs11: URI). "
                        "The PIN comes from --pin-file or $ENCLAVE_SWARM_PKCS11_PIN, never the "
                        "command line (docs/keys.md)")
    p.add_argument("--pkcs11-module", default=None, metavar="PATH",
                   help="the token's PKCS#11 module (default: $ENCLAVE_SWARM_PKCS11_MODULE, else "
                        "SoftHSM2's /usr/lib/softhsm/libsofthsm2.so)")
    p.add_argument("--token", default=None, metavar="LABEL", help="label of the PKCS#11 token")
    p.add_argument("--pin-file", type=Path, default=None, metavar="FILE",
                   help="file whose first line is the token's user PIN")

    p = sub.add_parser("run", help="run a node in the foreground")
    _data_dir_arg(p)
    p.add_argument("--profile", default=None, choices=["lan", "wan", "local-test", "local_test"],
                   help="profile for a data dir that is initialised by this run")
    p.add_argument("--listen", action="append", default=None, metavar="MULTIADDR",
                   help="listen address (repeatable; replaces the configured ones)")
    p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                   help="address of a federation node, with /p2p/<peer id> (repeatable)")
    p.add_argument("--tee", choices=["sim", "sev-snp", "tdx", "sgx", "auto"], default=None)
    p.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=None,
                   help="discover peers on the LAN by mDNS")
    p.add_argument("--psk", type=Path, default=None, metavar="FILE",
                   help="private-network pre-shared key file (64 hex chars)")
    p.add_argument("--security", choices=["noise", "tls"], default=None)
    p.add_argument("--policy", type=Path, default=None, metavar="FILE", help="attestation policy (TOML)")
    p.add_argument("--insecure-simulated-tee", action="store_true", default=False,
                   help="INSECURE: admit peers with the simulated TEE (anyone can forge its evidence) "
                        "outside local-test; needs --psk unless on loopback; never with wan")
    p.add_argument("--log-format", choices=["text", "json"], default=None)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default; "
                        "loopback only, e.g. 127.0.0.1:9464)")
    p.add_argument("--metrics-allow-remote", action="store_true", default=False,
                   help="allow --metrics on a non-loopback address (the metrics have no "
                        "authentication: put a proxy or a firewall in front)")

    p = sub.add_parser("status", help="show a running node's state")
    _data_dir_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("reload-policy", help="make a running node re-read its policy file")
    _data_dir_arg(p)

    p = sub.add_parser("stop", help="stop a running node gracefully")
    _data_dir_arg(p)

    p = sub.add_parser("demo", help="run a local federation and show it working")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")

    p = sub.add_parser("attest", help="attestation tools")
    asub = p.add_subparsers(dest="attest_command", metavar="SUBCOMMAND")
    pv = asub.add_parser("verify", help="verify an evidence file (SEV-SNP report, DCAP quote)")
    from node.attestation.cli import add_verify_arguments

    add_verify_arguments(pv)
    pe = asub.add_parser("evidence", help="produce evidence on this host over a nonce")
    _data_dir_arg(pe)
    pe.add_argument("--nonce", required=True, help="hex nonce (up to 64 bytes)")
    pe.add_argument("--tee", choices=["sim", "sev-snp", "tdx", "sgx", "auto"], default=None)
    pe.add_argument("-o", "--output", type=Path, default=None, help="write the evidence bundle here")

    for name in CLI_EXTENSIONS:
        _EXTRA_COMMANDS.update(importlib.import_module(name).add_parsers(sub))

    p = sub.add_parser("sim", help="run the deterministic swarm simulator")
    with contextlib.suppress(ImportError):
        from sim.cli import add_arguments as add_sim_arguments

        add_sim_arguments(p)

    p = sub.add_parser("completion", help="print a shell completion script for every subcommand",
                       description="Print the completion script: `source <(enclave-swarm completion "
                                   "bash)`, or write it to /etc/bash_completion.d/enclave-swarm.")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    """The completion script of this very parser (shtab walks it: subcommands, their flags and
    choices), so it never falls behind the commands."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = {
        "init": cmd_init, "run": cmd_run, "status": cmd_status, "demo": cmd_demo,
        "attest": cmd_attest, "sim": cmd_sim, "reload-policy": cmd_reload, "stop": cmd_stop,
        "completion": cmd_completion, **_EXTRA_COMMANDS,
    }[args.command]
    try:
        rc: int = handler(args)
        return rc
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAIL)
    except BrokenPipeError:  # e.g. `status --json | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stop the flush at exit failing
        return EXIT_OK


# ---------------------------------------------------------------------------- init / run


def _data_dir(args: argparse.Namespace) -> Any:
    from node.datadir import DataDir, default_data_dir

    return DataDir(args.data_dir or default_data_dir())


def _initial_config(requested: str | None) -> tuple[Any, str]:
    """The config for a new data dir and the line saying which profile and why."""
    from node.attestation.providers import detect_tee
    from node.config import NodeConfig, choose_profile

    hardware = None if requested is not None else detect_tee()
    name, why = choose_profile(requested, None if hardware is None else str(hardware))
    return NodeConfig.for_profile(name), f"profile {name}: {why}"


def cmd_init(args: argparse.Namespace) -> int:
    from node.datadir import DataDirError
    from overlay.host import peer_id_of

    dd = _data_dir(args)
    token = _token_args(args)
    cfg, why = _initial_config(args.profile)
    try:
        if token is None:
            key = dd.init(cfg)
        else:
            keys = dd.init_token(cfg, token)
            key = keys.identity
            keys.close()
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    print(f"initialised {dd.path}")
    print(why)
    print(dd.identity_note(cfg.attestation.tee))
    print(f"peer id {peer_id_of(key)}")
    return EXIT_OK


def _token_args(args: argparse.Namespace) -> Any:
    """The TokenConfig ``init --keys`` asks for, or None for file keys."""
    from node.keys.base import KeyProviderError
    from node.keys.config import DEFAULT_SOFTHSM_MODULE, token_config_from_uri
    from node.keys.pkcs11 import TokenConfig

    mode = args.keys
    if mode == "file":
        if args.token or args.pkcs11_module or args.pin_file:
            raise CliError("--token, --pkcs11-module and --pin-file need --keys pkcs11", EXIT_USAGE)
        return None
    if mode.startswith("pkcs11:"):
        try:
            t = token_config_from_uri(mode, module=args.pkcs11_module)
        except KeyProviderError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        if args.token and args.token != t.token:
            raise CliError("--token and the URI's token= disagree", EXIT_USAGE)
        if args.pin_file:
            t = dataclasses.replace(t, pin_file=str(args.pin_file.absolute()))
        return t
    if mode != "pkcs11":
        raise CliError("--keys must be file, pkcs11 or a pkcs11: URI", EXIT_USAGE)
    if not args.token:
        raise CliError("--keys pkcs11 needs --token LABEL", EXIT_USAGE)
    module = args.pkcs11_module or os.environ.get("ENCLAVE_SWARM_PKCS11_MODULE") or DEFAULT_SOFTHSM_MODULE
    return TokenConfig(module=module, token=args.token,
                       pin_file=str(args.pin_file.absolute()) if args.pin_file else "")


def _apply_overrides(cfg: Any, args: argparse.Namespace) -> Any:
    net, att = cfg.network, cfg.attestation
    if args.listen:
        net = dataclasses.replace(net, listen=tuple(args.listen))
    if args.bootstrap:
        net = dataclasses.replace(net, bootstrap=tuple(dict.fromkeys((*net.bootstrap, *args.bootstrap))))
    if args.mdns is not None:
        net = dataclasses.replace(net, mdns=args.mdns)
    if args.security:
        net = dataclasses.replace(net, security=args.security)
    if args.psk:
        net = dataclasses.replace(net, psk_file=str(args.psk))
    if args.tee:
        att = dataclasses.replace(att, tee=args.tee)
    if args.policy:
        att = dataclasses.replace(att, policy_file=str(args.policy))
    if args.insecure_simulated_tee:
        att = dataclasses.replace(att, insecure_accept_simulated=True)
    cfg = dataclasses.replace(cfg, network=net, attestation=att)
    if args.log_format:
        cfg = dataclasses.replace(cfg, log_format=args.log_format)
    if args.log_level:
        cfg = dataclasses.replace(cfg, log_level=args.log_level)
    cfg.validate()
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from node.config import ConfigError, exposure_error
    from node.datadir import DataDirError
    from node.logs import setup_logging
    from node.upgrade import SchemaError, check_data_dir

    try:  # overlay.libp2p_fixes refuses any py-libp2p but the version its fixes are for
        from node.runtime import SetupError, build_agent
        from overlay.discovery import BootstrapAddressError, split_p2p_addr
        from overlay.host import HostConfigError, read_psk
    except ImportError as exc:
        raise CliError(f"cannot start: {exc}") from None

    # stderr is the log from the start: with --log-format json every line must be a JSON
    # record, the note about a new data dir included (the config may refine format and level).
    setup_logging(args.log_format or "text", args.log_level or "info")
    for b in args.bootstrap:  # a bad --bootstrap is a usage error; one from config.toml is not
        try:
            split_p2p_addr(b)
        except BootstrapAddressError as exc:
            raise CliError(f"--bootstrap: {exc}", EXIT_USAGE) from None
    metrics_address = _metrics_address(args)
    log = logging.getLogger("enclave_swarm.cli")
    dd = _data_dir(args)
    if not dd.exists():
        if dd.path.exists() and any(dd.path.iterdir()) and not dd.config_path.exists():
            raise CliError(f"{dd.path}: not an enclave-swarm data dir (no identity.key); refusing to use it")
        cfg, why = _initial_config(args.profile)
        try:
            dd.init(cfg)
        except DataDirError as exc:
            raise CliError(str(exc)) from None
        log.info("initialised a new node in %s; %s", dd.path, why)
    try:
        loaded = dd.load_config()
        # Every store this release reads, before anything (the run lock included) is written.
        check_data_dir(dd.path)
        cfg = _apply_overrides(loaded, args)
        for b in cfg.network.bootstrap:
            split_p2p_addr(b)
        psk = read_psk(cfg.network.psk_file) if cfg.network.psk_file else None
    except (DataDirError, ConfigError, HostConfigError, SchemaError) as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    except BootstrapAddressError as exc:
        raise CliError(f"{dd.config_path}: network.bootstrap: {exc}", EXIT_FAIL) from None
    problem = exposure_error(cfg, has_psk=psk is not None)
    if problem:
        raise CliError(problem)
    setup_logging(cfg.log_format, cfg.log_level)
    try:
        # The keys first: a wrong PIN, a missing token or object, a module that does not load
        # is refused here, before the run lock or anything else in the data dir is touched.
        dd.key_provider().close()
        dd.lock()
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    try:
        try:
            agent = build_agent(dd, cfg, psk_hex=psk)
        except (SetupError, DataDirError) as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:  # libp2p host construction (bad listen address, ...)
            raise CliError(f"cannot start: {exc}") from None
        if metrics_address is not None:
            from node.telemetry.server import enable_metrics

            enable_metrics(agent, metrics_address)

        async def on_signals(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for sig in signals:
                    log.info("received %s, leaving the federation", signal.Signals(sig).name)
                    agent.stop()
                    return

        async def main() -> None:
            # The process ends when the agent does: after a signal, a `stop` command, a
            # `leave` or a dissolution alike.
            async with trio.open_nursery() as nursery:
                await nursery.start(on_signals)
                try:
                    await nursery.start(agent.run)
                except OSError as exc:
                    raise CliError(f"cannot listen: {exc.strerror or exc}") from None
                for a in agent.full_addrs():
                    print(a, flush=True)
                await _start_systemd_notify(nursery, agent)
                await agent.wait_stopped()
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        dd.unlock()
    return EXIT_OK


def _metrics_address(args: argparse.Namespace) -> Any:
    """``--metrics`` parsed and checked before anything starts: a malformed address is a usage
    error (2), a non-loopback one without --metrics-allow-remote a refusal (1)."""
    if args.metrics is None:
        if args.metrics_allow_remote:
            raise CliError("--metrics-allow-remote needs --metrics HOST:PORT", EXIT_USAGE)
        return None
    from node.telemetry.server import MetricsAddressError, parse_metrics_address

    try:
        return parse_metrics_address(args.metrics, allow_remote=args.metrics_allow_remote)
    except MetricsAddressError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.usage else EXIT_FAIL) from None


async def _start_systemd_notify(nursery: Any, agent: Any) -> None:
    """Under systemd (``$NOTIFY_SOCKET`` set): READY now, then STATUS and the watchdog."""
    from node.telemetry.systemd import Notifier, supervise, watchdog_interval_s

    notifier = Notifier.from_env()
    if notifier is not None:
        watchdog_s = watchdog_interval_s(os.environ)
        await nursery.start(lambda **kw: supervise(agent, notifier, watchdog_s=watchdog_s, **kw))


# ---------------------------------------------------------------------------- status


def node_request(args: argparse.Namespace, cmd: dict[str, Any]) -> dict[str, Any]:
    from node.control import BadAnswer, NotRunning, request

    dd = _data_dir(args)
    try:
        reply = request(dd.socket_path, cmd)
    except NotRunning:
        raise CliError(f"no node is running on {dd.path}") from None
    except BadAnswer as exc:
        raise CliError(f"cannot talk to a node on {dd.path}: {exc}") from None
    if not reply.get("ok"):
        raise CliError(str(reply.get("error", "the node refused the request")))
    return reply


def cmd_status(args: argparse.Namespace) -> int:
    status = node_request(args, {"cmd": "status"})["status"]
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    print_status(status)
    return EXIT_OK


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]node[/bold] {status['peer_id']}  tee={status['tee']}  "
                  f"profile={status['profile']}  uptime={status['uptime_s']:.0f}s  "
                  f"attested peers={status['attested_peers']}/{len(status['peers'])}")
    for a in status["addrs"]:
        console.print(f"  {a}")
    for line in status_summary(status):
        console.print(line)
    table = Table(show_lines=False)
    for col in ("peer", "attested", "tee", "score", "rtt ms", "last attested", "state", "verdict"):
        table.add_column(col)
    for p in status["peers"]:
        ago = p.get("last_attested_ago_s")
        table.add_row(
            p["peer_id"][-12:], "yes" if p["attested"] else "[red]no[/red]", p.get("tee") or "-",
            "-" if p.get("score") is None else str(p["score"]),
            "-" if p.get("rtt_ms") is None else f"{p['rtt_ms']:.2f}",
            "-" if ago is None else f"{ago:.0f}s ago", p.get("state", "-"),
            (p.get("verdict") or "-")[:60])
    console.print(table)


def status_summary(status: dict[str, Any]) -> list[str]:
    """What the JSON status says beyond the peer table, a line each: the manager, the term and
    this node's role; its shards; its jobs and fragments; the schema versions of its data dir
    against the newest this release reads (the parts a node runs without omitted)."""
    out = []
    keys = status.get("keys")
    if isinstance(keys, dict) and keys.get("backend") == "pkcs11":
        state = "available" if keys.get("available") else f"UNAVAILABLE ({keys.get('reason')}): not signing"
        out.append(f"keys in PKCS#11 token {keys.get('token')!r}: {state}  "
                   f"losses {keys.get('losses', 0)}  recoveries {keys.get('recoveries', 0)}")
    if "role" in status:
        mgr = status.get("manager") or "unknown"
        out.append(f"role {status['role']}  manager {mgr[-12:] if mgr != 'unknown' else mgr}  "
                   f"term {status.get('term')}  commit {status.get('commit_index')}  "
                   f"council {len(status.get('council') or [])}")
    sh = status.get("shards")
    if isinstance(sh, dict):
        out.append(f"shards held {sh.get('shards_held', 0)} ({sh.get('store_used_bytes', 0):,} of "
                   f"{sh.get('store_quota_bytes', 0):,} bytes)  objects owned {sh.get('objects_owned', 0)}")
    ts = status.get("tasks")
    if isinstance(ts, dict):
        jobs = (ts.get("owner") or {}).get("jobs") or {}
        agent = ts.get("agent") or {}
        owned = ", ".join(f"{n} {k}" for k, n in sorted(jobs.items())) or "none"
        out.append(f"jobs owned: {owned}  fragments here: {agent.get('running', 0)} running, "
                   f"{agent.get('succeeded', 0)} succeeded, {agent.get('failed', 0)} failed")
    sc = status.get("schema")
    if isinstance(sc, dict):
        sup = sc.get("supported") or {}
        out.append("schema " + "  ".join(f"{k} {sc.get(k)}/{sup.get(k)}"
                                         for k in ("config", "raft", "shards"))
                   + "  (data dir / newest this release reads)")
    return out


def cmd_reload(args: argparse.Namespace) -> int:
    node_request(args, {"cmd": "reload-policy"})
    print("policy reloaded")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    node_request(args, {"cmd": "stop"})
    print("stopping")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    if not 2 <= args.nodes <= 64:
        raise CliError("--nodes must be within 2..64", EXIT_USAGE)
    if not args.timeout_s > 0:  # NaN too; checked before any node starts
        raise CliError("--timeout-s must be positive", EXIT_USAGE)
    return run_demo(args.nodes, timeout_s=args.timeout_s, keep=args.keep)


# ---------------------------------------------------------------------------- attest


def cmd_attest(args: argparse.Namespace) -> int:
    if args.attest_command == "verify":
        from node.attestation.cli import run_verify

        rc: int = run_verify(args)
        return rc
    if args.attest_command == "evidence":
        return cmd_attest_evidence(args)
    raise CliError("usage: enclave-swarm attest {verify,evidence} ...", EXIT_USAGE)


def cmd_attest_evidence(args: argparse.Namespace) -> int:
    import dataclasses as dc

    from node.datadir import DataDirError
    from node.runtime import SetupError, select_provider
    from overlay.handshake import binding

    try:
        nonce = bytes.fromhex(args.nonce)
    except ValueError:
        raise CliError("--nonce must be hexadecimal", EXIT_USAGE) from None
    if not 1 <= len(nonce) <= 64:
        raise CliError("--nonce must be 1..64 bytes", EXIT_USAGE)
    dd = _data_dir(args)
    try:
        cfg = dd.load_config()
        if args.tee:
            cfg = dc.replace(cfg, attestation=dc.replace(cfg.attestation, tee=args.tee))
        keys = dd.key_provider()
        provider = select_provider(cfg, dd)
    except (DataDirError, SetupError) as exc:
        raise CliError(str(exc)) from None
    pub = keys.identity.public_key().public_bytes_raw()
    keys.close()
    evidence = provider.get_evidence(binding(nonce, pub))
    bundle = {
        "kind": str(evidence.kind),
        "nonce": nonce.hex(),
        "public_key": pub.hex(),
        "report_data": binding(nonce, pub).hex(),
        "evidence": evidence.blob.hex(),
        "certs": [c.hex() for c in evidence.certs],
    }
    text = json.dumps(bundle, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    try:
        from sim.cli import run as run_sim
    except ImportError:
        raise CliError("the simulator is not available in this build") from None
    for out in (args.json, args.plot):  # found out before the run, not after it
        if out and out != "-" and not Path(out).expanduser().absolute().parent.is_dir():
            raise CliError(f"{out}: no such directory")
    try:
        rc: int = run_sim(args)
    except OSError as exc:  # writing the report or the plot
        raise CliError(f"{exc.filename or 'output'}: {exc.strerror or exc}") from None
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
