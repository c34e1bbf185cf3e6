"""Helpers every ``sim`` scenario family's command shares (kept apart from :mod:`sim.cli` so a
family's ``cli`` module can use them without importing the dispatcher that imports it)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that were set (default None means "the world's default")."""
    return {n: v for n in names if (v := getattr(args, n, None)) is not None}


def write_json(report: dict[str, Any], dest: str | None) -> None:
    """Write ``report`` as JSON to the file ``dest`` (``-``: stdout; None: nowhere)."""
    text = json.dumps(report, indent=2, sort_keys=True)
    if dest == "-":
        print(text)
    elif dest:
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text + "\n")
