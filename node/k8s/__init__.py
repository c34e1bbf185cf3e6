"""Kubernetes: the operator for ``EnclaveFederation`` and ``EnclaveJob`` resources.

- :mod:`node.k8s.jobs` and :mod:`node.k8s.federation`: pure functions from a resource's spec
  (and what a node answered) to the actions to take and the status to write; no kopf, no I/O.
- :mod:`node.k8s.nodeclient`: the node's control API (node/control.py) for asyncio code.
- :mod:`node.k8s.kube`: the few Kubernetes API calls the federation handler makes.
- :mod:`node.k8s.operator`: the thin kopf glue (``kopf run -m node.k8s.operator``); the only
  module that imports kopf (the optional extra ``k8s``).

docs/kubernetes.md is the operator's manual; deploy/kubernetes/ holds the CRDs and manifests.
"""
