"""Operating a node: Prometheus metrics and the systemd service manager's protocol.

* :mod:`node.telemetry.catalog` - every metric the node exports: name, type, labels, help.
* :mod:`node.telemetry.collector` - a Prometheus collector that reads what the node keeps up
  to date as it works (``agent.counters``, ``agent.timings``, the gossip layer's traffic
  counts, the Raft node's term and commit index, the shard store's byte count) and the
  gauges :mod:`node.telemetry.sampler` refreshes on the node's own loop. A scrape computes
  nothing by walking the node's state, so it answers in time under load.
* :mod:`node.telemetry.server` - the admin HTTP endpoint (``run --metrics 127.0.0.1:9464``):
  loopback only unless ``--metrics-allow-remote``; one ``CollectorRegistry`` per node; an
  address that is taken is logged and retried while the node keeps running.
* :mod:`node.telemetry.systemd` - ``sd_notify`` (READY, STATUS, STOPPING, WATCHDOG) as a
  datagram to ``$NOTIFY_SOCKET``, with the watchdog fed only while the event loop is healthy.

``docs/operations.md`` lists the metrics, what to alert on and the example rules.
"""
