"""The part of Kustomize that deploy/kubernetes/ uses, to render it where neither kustomize nor
kubectl is installed (neither is in Debian 12): ``resources`` (files, and directories with a
kustomization.yaml) and ``patches`` with a ``path`` to a JSON patch (RFC 6902: add, replace,
remove, test) and a ``target`` (group, version, kind, name). Anything else in a
kustomization.yaml is refused, so that the manifests cannot quietly grow a feature this
renderer would skip. ``kubectl apply -k`` renders the same files to the same objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches"}


class KustomizeError(ValueError):
    pass


def render(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: this renderer does not do {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for p in k.get("patches", []):
        ops = yaml.safe_load((directory / p["path"]).read_text())
        if not isinstance(ops, list):
            raise KustomizeError(f"{p['path']}: only JSON patches (a list of operations)")
        hits = [o for o in objects if _matches(o, p.get("target", {}))]
        if not hits:
            raise KustomizeError(f"{p['path']}: its target matches no object")
        for o in hits:
            for op in ops:
                apply_op(o, op)
    return objects


def _matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return all((
        target.get("kind") in (None, obj["kind"]),
        target.get("name") in (None, obj["metadata"]["name"]),
        target.get("group") in (None, group),
        target.get("version") in (None, version),
    ))


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"{path!r} is not a JSON pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def apply_op(doc: dict[str, Any], op: dict[str, Any]) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for t in parents:
        node = node[int(t)] if isinstance(node, list) else node[t]
    kind = op["op"]
    if kind == "add":
        value = copy.deepcopy(op["value"])
        if isinstance(node, list):
            node.append(value) if last == "-" else node.insert(int(last), value)
        else:
            node[last] = value
    elif kind == "replace":
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            if last not in node:
                raise KustomizeError(f"replace: no {op['path']}")
            node[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del node[int(last) if isinstance(node, list) else last]
    elif kind == "test":
        got = node[int(last)] if isinstance(node, list) else node.get(last)
        if got != op["value"]:
            raise KustomizeError(f"test failed: {op['path']} is {got!r}, not {op['value']!r}")
    else:
        raise KustomizeError(f"unsupported JSON patch op {kind!r}")
