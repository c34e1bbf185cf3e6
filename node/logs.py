"""Logging to stderr, as text or JSON lines, with libp2p's chatter kept in its place.

Both formats show the same records (one handler, one filter; only the formatter differs), one
line each. A record about a peer carries ``extra={"peer": <peer id>}`` (about several, also
``"peers"``, a list): JSON has them as fields, and the text line names the peer too (appended
as ``peer=<id>`` when the message does not already say it). Secrets are never arguments of a
log call (tests/telemetry/test_logs.py greps a federation's logs for its keys, key shares and
stored plaintext).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

# Structured fields a log call may pass in ``extra``, copied into JSON records.
FIELDS = ("peer", "peers", "reason", "proto", "job", "term", "product")

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
        for key in FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message``, with ``peer=<id>`` appended when the record is about a
    peer its message does not name."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        peer = getattr(record, "peer", None)
        if peer and str(peer) not in record.getMessage():
            line += f" peer={peer}"
        return line


class _Libp2pFilter(logging.Filter):
    """py-libp2p logs routine events (and some through the root logger) at WARNING and ERROR,
    e.g. every stream a closing peer refuses. Our code translates every libp2p failure that
    matters into a log line of its own, so libp2p's lines are shown only with debug_libp2p
    (or when CRITICAL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_libp2p = record.name.startswith(("libp2p", "multiaddr")) or "/libp2p/" in record.pathname
        return not (from_libp2p and record.levelno < logging.CRITICAL) or _debug_libp2p


_debug_libp2p = False


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``--log-format`` ``fmt`` (``text`` or ``json``)."""
    return JsonFormatter() if fmt == "json" else TextFormatter()


def setup_logging(fmt: str = "text", level: str = "info", *, debug_libp2p: bool = False) -> None:
    global _debug_libp2p
    _debug_libp2p = debug_libp2p
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(_Libp2pFilter())
    # py-libp2p (at import, unless $LIBP2P_DEBUG asks for its own handlers) leaves its "libp2p"
    # logger without handlers and not propagating: its warnings then reach stderr through
    # Python's last-resort handler, raw and multi-line, in the middle of a JSON log and past
    # the filter below. Route them through our handler like every other record.
    if not os.environ.get("LIBP2P_DEBUG"):
        logging.getLogger("libp2p").propagate = True
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
