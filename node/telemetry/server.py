"""The metrics endpoint: ``GET /metrics`` on an admin address, served from its own thread.

* Off by default; ``run --metrics HOST:PORT`` turns it on. HOST is an IP literal (``[::1]``
  for IPv6) or ``localhost``. A non-loopback HOST is refused (exit 1) unless
  ``--metrics-allow-remote`` says the operator means it: the metrics show the federation's
  shape (peers, roles, jobs) and carry no authentication, so they stay on the host by default
  (a Prometheus elsewhere scrapes through a proxy, a tunnel or the pod network on purpose).
* One :class:`~prometheus_client.CollectorRegistry` per node (tests run several nodes in one
  process), with the node's collector and prometheus_client's process collector (RSS, open
  descriptors, CPU) under the same prefix.
* An address that is taken (or cannot be bound) is logged as an error naming it and counted
  (``metrics_bind_failed``); the node keeps running without metrics and retries every
  ``RETRY_S`` seconds; ``status --json`` shows ``metrics.serving`` and the error.
* The HTTP server is prometheus_client's WSGI app and threading server (a thread per
  request, so a scrape is answered while the trio loop is busy), built here rather than by
  ``start_http_server`` so that each request's thread CPU time is accounted
  (:class:`~node.telemetry.sampler.MetricsCost`, exported as
  ``enclave_swarm_metrics_cpu_seconds_total``); at the node's stop it is shut down and its
  thread joined from a worker thread, so shutdown is clean.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import trio
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from node.telemetry.collector import NodeCollector
from node.telemetry.sampler import MetricsCost, Sampler

log = logging.getLogger("enclave_swarm.telemetry")

RETRY_S = 10.0
DEFAULT_PORT = 9464


class MetricsAddressError(ValueError):
    """``--metrics`` is unusable. ``usage`` is True when it does not parse (exit 2), False when
    it parses but is refused (a non-loopback address without the flag: exit 1)."""

    def __init__(self, msg: str, *, usage: bool) -> None:
        super().__init__(msg)
        self.usage = usage


@dataclasses.dataclass(frozen=True)
class MetricsAddress:
    host: str  # an IP literal
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_metrics_address(text: str, *, allow_remote: bool = False) -> MetricsAddress:
    """``HOST:PORT`` -> :class:`MetricsAddress` (port 0: any free port)."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or len(port_s) > 5:
        raise MetricsAddressError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}",
                                  usage=True)
    port = int(port_s)
    if port > 65535:
        raise MetricsAddressError(f"--metrics {text!r}: port {port} is out of range", usage=True)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise MetricsAddressError(f"--metrics {text!r}: HOST must be an IP address or localhost",
                                  usage=True) from None
    if not ip.is_loopback and not allow_remote:
        raise MetricsAddressError(
            f"--metrics {text}: {host} is not a loopback address; the metrics have no "
            "authentication, so they are served on loopback only unless --metrics-allow-remote "
            "says otherwise", usage=False)
    return MetricsAddress(str(ip), port)


def _handler(cost: MetricsCost) -> type[WSGIRequestHandler]:
    """A request handler that logs nothing (as prometheus_client's) and adds the CPU time of
    its thread while it answers (the whole request: a fresh thread each) to ``cost``."""

    class Handler(WSGIRequestHandler):
        def handle(self) -> None:
            began = time.thread_time()
            try:
                super().handle()
            finally:
                cost.add_scrape(time.thread_time() - began)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class MetricsEndpoint:
    """The registry of one node and the HTTP server exporting it."""

    def __init__(self, agent: Any, address: MetricsAddress, *, sample_period_s: float | None = None,
                 retry_s: float = RETRY_S) -> None:
        self.agent = agent
        self.address = address
        self.retry_s = retry_s
        self.cost = MetricsCost()
        self.sampler = Sampler(agent, cost=self.cost) if sample_period_s is None else \
            Sampler(agent, period_s=sample_period_s, cost=self.cost)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(agent, self.sampler)
        self.registry.register(self.collector)
        ProcessCollector(namespace="enclave_swarm", registry=self.registry)
        self.error: str | None = None
        self.bound_port: int | None = None
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"http://{host}:{self.bound_port or self.address.port}/metrics"

    def open(self) -> None:
        """Bind and start serving. Raises OSError (the address is taken, ...)."""
        family = socket.AF_INET6 if ":" in self.address.host else socket.AF_INET
        server = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
        httpd: Any = make_server(self.address.host, self.address.port, make_wsgi_app(self.registry),
                                 server, handler_class=_handler(self.cost))
        thread = threading.Thread(target=httpd.serve_forever, name="metrics-exporter", daemon=True)
        thread.start()
        self._httpd, self._thread = httpd, thread
        self.bound_port = httpd.server_port
        self.error = None

    def close(self) -> None:
        """Stop serving and join the server's thread (blocking: call from a worker thread)."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def status(self) -> dict[str, Any]:
        return {"address": str(self.address), "serving": self.serving,
                "url": self.url if self.serving else None, "error": self.error,
                "cost": self.cost.snapshot()}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Node service: the sampler, then the endpoint (first bind before ``started``, so the
        address is logged before the node's listening line); retried while it fails."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.sampler.run)
            try:
                if not self._try_open(first=True):
                    nursery.start_soon(self._retry)
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.close)
                nursery.cancel_scope.cancel()

    def _try_open(self, *, first: bool) -> bool:
        try:
            self.open()
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            self.error = f"cannot listen on {self.address}: {exc.strerror or exc}"
            self.agent.counters.inc("metrics_bind_failed", name)
            if first:
                log.error("metrics: %s; the node runs on without metrics and retries every %.0fs",
                          self.error, self.retry_s)
            return False
        log.info("metrics on %s", self.url)
        return True

    async def _retry(self) -> None:
        while True:
            await trio.sleep(self.retry_s)
            if self._try_open(first=False):
                return


def enable_metrics(agent: Any, address: MetricsAddress, **options: Any) -> MetricsEndpoint:
    """Serve ``agent``'s metrics on ``address`` while it runs (call before ``agent.run``)."""
    endpoint = MetricsEndpoint(agent, address, **options)
    agent.add_service(endpoint.run)
    agent.add_status("metrics", endpoint.status)
    return endpoint
