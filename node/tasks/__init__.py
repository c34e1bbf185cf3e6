"""Tasks on the node's side (see docs/tasks.md).

- :mod:`node.tasks.spec`        job specs (TOML/JSON), validated with every error named; the split
- :mod:`node.tasks.aggregate`   the built-in aggregations of fragment outputs
- :mod:`node.tasks.capability`  the capability record a node gossips beside its score record

The replicated task state machine and the scheduler are pure: consensus/tasks.py and
consensus/scheduler.py.
"""
