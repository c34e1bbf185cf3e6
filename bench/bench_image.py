"""The node image (`make image`, deploy/container/): its size, and how long its node takes from
start to listening, against the same node from this checkout's virtualenv, in the same run.

Each round starts a fresh node (a new, empty data dir: the first start of a pod, identity made
included) with the simulated TEE on loopback, and times from process start to the first full
listen address on stdout (what `run` prints once it listens). The image's node runs in a fresh
`buildah from` container each round (`buildah run`, chroot isolation, the host's loopback), as
its non-root user through the image's entry point; the baseline is `python -m node.cli run`.

    python -m bench.bench_image                          # localhost/enclave-swarm:<version>
    python -m bench.bench_image --image localhost/enclave-swarm:dev --rounds 5

Without buildah or the image it says so and exits 0 (`python -m bench` runs everything).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ARGS = ["--profile", "local-test", "--tee", "sim", "--listen", "/ip4/127.0.0.1/tcp/0"]
TIMEOUT_S = 120.0


def _version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def time_to_listening(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from starting ``cmd`` to its first line holding ``/p2p/`` on stdout."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    buf = b""
    try:
        while time.monotonic() - start < TIMEOUT_S:
            ready, _, _ = select.select([proc.stdout], [], [], 0.05)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                if b"/p2p/" in buf:
                    return time.monotonic() - start
            elif proc.poll() is not None:
                break
        raise RuntimeError(f"{cmd[0]}: no listen address within {TIMEOUT_S}s: {buf[-300:]!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _layers_bytes(manifest: dict[str, object]) -> int:
    layers = manifest.get("layers")
    assert isinstance(layers, list) and layers, "image has no layers"
    return sum(int(layer["size"]) for layer in layers)


def image_size_bytes(image: str) -> tuple[int, int]:
    """(the layers as stored, uncompressed; the layers gzip-compressed, as a registry would
    hold and a node would pull them: the image pushed to a local OCI directory)."""
    info = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", image],
                                     capture_output=True, text=True, check=True).stdout)
    stored = _layers_bytes(json.loads(info["Manifest"]))
    with tempfile.TemporaryDirectory(prefix="bench-image-oci-") as tmp:
        subprocess.run(["buildah", "push", "--quiet", "--compression-format", "gzip", image,
                        f"oci:{tmp}/layout:bench"], capture_output=True, check=True)
        index = json.loads((Path(tmp) / "layout" / "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.loads((Path(tmp) / "layout" / "blobs" / "sha256" / digest).read_text())
        return stored, _layers_bytes(manifest)


def image_round(image: str) -> float:
    ctr = subprocess.run(["buildah", "from", "--pull-never", image], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        return time_to_listening(["buildah", "run", "--isolation", "chroot", ctr, "--",
                                  "/usr/local/bin/enclave-swarm-entrypoint", "run",
                                  "--data-dir", "/var/lib/enclave-swarm/node", *RUN_ARGS])
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)


def host_round() -> float:
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        return time_to_listening([sys.executable, "-m", "node.cli", "run", "--data-dir",
                                  str(Path(tmp) / "node"), *RUN_ARGS],
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_image")
    ap.add_argument("--image", default=f"localhost/enclave-swarm:{_version()}")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    if shutil.which("buildah") is None:
        print("bench_image: buildah is not installed (make image installs it and builds the image)")
        return 0
    if subprocess.run(["buildah", "inspect", "--type", "image", args.image],
                      capture_output=True, check=False).returncode != 0:
        print(f"bench_image: no image {args.image} (build it with `make image`)")
        return 0
    stored, pulled = image_size_bytes(args.image)
    print(f"image {args.image}: {stored / 1e6:.0f} MB uncompressed, {pulled / 1e6:.0f} MB gzip-compressed "
          "(what a registry holds and a node pulls)")
    image_s, host_s = [], []
    for _ in range(args.rounds):  # interleaved: both see the same machine load
        image_s.append(image_round(args.image))
        host_s.append(host_round())
    mi, mh = statistics.median(image_s), statistics.median(host_s)
    print(f"start to listening, fresh data dir, median of {args.rounds}: image {mi:.2f} s "
          f"(min {min(image_s):.2f}), host venv {mh:.2f} s (min {min(host_s):.2f}); "
          f"ratio image/host {mi / mh:.2f}x")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main(sys.argv[1:]))
