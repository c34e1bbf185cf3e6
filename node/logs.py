"""Logging to stderr, as text or JSON lines, with libp2p's chatter kept in its place."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("peer", "reason", "proto"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Libp2pFilter(logging.Filter):
    """py-libp2p logs routine events (and some through the root logger) at WARNING and ERROR,
    e.g. every stream a closing peer refuses. Our code translates every libp2p failure that
    matters into a log line of its own, so libp2p's lines are shown only with debug_libp2p
    (or when CRITICAL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_libp2p = record.name.startswith(("libp2p", "multiaddr")) or "/libp2p/" in record.pathname
        return not (from_libp2p and record.levelno < logging.CRITICAL) or _debug_libp2p


_debug_libp2p = False


def setup_logging(fmt: str = "text", level: str = "info", *, debug_libp2p: bool = False) -> None:
    global _debug_libp2p
    _debug_libp2p = debug_libp2p
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_Libp2pFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
