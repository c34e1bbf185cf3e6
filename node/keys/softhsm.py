"""SoftHSM2 tokens of our own: for ``make demo``, the benchmarks and the tests.

Each :class:`SoftHsm` has its own token directory and ``softhsm2.conf`` under a directory the
caller owns, so two users (two tests, a demo and a test) never share a token. Tokens are made
with Debian's ``softhsm2-util``; the module is ``/usr/lib/softhsm/libsofthsm2.so``.
``SOFTHSM2_CONF`` selects the configuration: :meth:`SoftHsm.env` gives it to child processes,
:meth:`SoftHsm.activate` sets it in this one (read when the module initialises).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from node.keys.config import DEFAULT_SOFTHSM_MODULE
from node.keys.pkcs11 import PIN_ENV, TokenConfig

SO_PIN = "12345678"


def softhsm_missing() -> str | None:
    """Why SoftHSM2 cannot be used here (one line), or None when it can."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (Debian: apt-get install softhsm2; `make sysdeps`)"
    if not Path(DEFAULT_SOFTHSM_MODULE).exists():
        return f"the SoftHSM2 module {DEFAULT_SOFTHSM_MODULE} is missing"
    return None


class SoftHsm:
    """A private SoftHSM2 token store under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tokens = self.root / "tokens"
        self.tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.conf = self.root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\n"
                             "log.level = ERROR\nslots.removable = false\n")
        self.module = DEFAULT_SOFTHSM_MODULE
        self.made: dict[str, TokenConfig] = {}  # by label, the tokens init_token made

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def activate(self) -> None:
        os.environ["SOFTHSM2_CONF"] = str(self.conf)

    def init_token(self, label: str, pin: str = "1234", *, pin_file: bool = True) -> TokenConfig:
        """Make a fresh token ``label`` with user PIN ``pin``; its TokenConfig (PIN in a 0600
        file under ``root`` when ``pin_file``, else in $ENCLAVE_SWARM_PKCS11_PIN)."""
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN,
                        "--pin", pin], check=True, capture_output=True, env={**os.environ, **self.env()})
        path = ""
        if pin_file:
            p = self.root / f"{label}.pin"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pin + "\n")
            path = str(p)
        self.made[label] = TokenConfig(module=self.module, token=label, pin_file=path, pin_env=PIN_ENV)
        return self.made[label]
