"""``python -m sim``: the ``enclave-swarm sim`` command, standalone."""

from __future__ import annotations

import sys

from sim.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
