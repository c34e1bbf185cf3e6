"""The kopf glue of the enclave-swarm operator: ``kopf run -m node.k8s.operator``.

It runs as the ``operator`` container of every node pod (it must reach the node's control
socket, a 0600 Unix socket on the pod's volume); kopf's peering (``--peering enclave-swarm
--priority N``, N falling with the pod's ordinal) keeps exactly one of them active, the lowest
ordinal that is alive. Everything here only adapts kopf's calling convention to
node/k8s/handlers.py: resource specs in, status patches out, and a node that does not answer
becomes a :class:`kopf.TemporaryError` (kopf retries the handler after ``delay``).
"""

from __future__ import annotations

import logging
from typing import Any, Union

try:
    import kopf
except ImportError as exc:  # the optional extra: say which, instead of a traceback
    raise SystemExit(f"the operator needs kopf: pip install 'enclave-swarm[k8s]' ({exc})") from None

from node.k8s import handlers, jobs
from node.k8s.kube import Api, InClusterApi
from node.k8s.nodeclient import NodeUnavailable

Logger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]
GROUP, VERSION = "enclave-swarm.io", "v1alpha1"
JOB_POLL_S = 2.0
FEDERATION_POLL_S = 15.0
RETRY_S = 5.0

CONFIG = handlers.OperatorConfig.from_env()
_API: Api | None = None


def api() -> Api:
    global _API
    if _API is None:
        _API = InClusterApi.from_service_account()
    return _API


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.WARNING  # k8s Events for problems only


def _live(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in jobs.TERMINAL_PHASES or (
        status.get("phase") == jobs.SUCCEEDED and not status.get("result"))


@kopf.on.create(GROUP, VERSION, "enclavejobs", id="job-create")
@kopf.on.resume(GROUP, VERSION, "enclavejobs", id="job-resume")
@kopf.timer(GROUP, VERSION, "enclavejobs", interval=JOB_POLL_S, when=_live, id="job-poll")
async def job_reconcile(spec: kopf.Spec, status: kopf.Status, namespace: str | None, name: str,
                        uid: str, patch: kopf.Patch, logger: Logger, **_: Any) -> None:
    ns = namespace or CONFIG.namespace
    try:
        fields = await handlers.reconcile_job(CONFIG, spec, status, namespace=ns, name=name, uid=uid)
    except NodeUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_S) from None
    if fields.get("phase") == jobs.INVALID and status.get("phase") != jobs.INVALID:
        logger.warning("EnclaveJob %s/%s is invalid: %s", ns, name, "; ".join(fields["reasons"]))
    for key, value in fields.items():
        patch.status[key] = value


@kopf.on.delete(GROUP, VERSION, "enclavejobs", optional=True, id="job-delete")
async def job_delete(status: kopf.Status, namespace: str | None, name: str, uid: str, **_: Any) -> None:
    try:
        await handlers.forget_job(CONFIG, status, namespace=namespace or CONFIG.namespace, name=name,
                                  uid=uid)
    except NodeUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_S) from None


@kopf.on.create(GROUP, VERSION, "enclavefederations", id="federation-create")
@kopf.on.update(GROUP, VERSION, "enclavefederations", field="spec", id="federation-update")
@kopf.on.resume(GROUP, VERSION, "enclavefederations", id="federation-resume")
@kopf.timer(GROUP, VERSION, "enclavefederations", interval=FEDERATION_POLL_S, id="federation-poll")
async def federation_reconcile(spec: kopf.Spec, namespace: str | None, name: str, patch: kopf.Patch,
                               logger: Logger, **_: Any) -> None:
    try:
        fields = await handlers.reconcile_federation(CONFIG, api(), spec,
                                                     namespace=namespace or CONFIG.namespace)
    except NodeUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_S) from None
    if fields.get("phase") == "Invalid":
        logger.warning("EnclaveFederation %s/%s is invalid: %s", namespace, name,
                       "; ".join(fields["reasons"]))
    for key, value in fields.items():
        patch.status[key] = value
