#!/bin/sh
# The image's entry point: `enclave-swarm "$@"`. For `run` it adds, from the environment the
# Kubernetes manifests (deploy/kubernetes/) set:
#   ENCLAVE_SWARM_PROFILE          --profile (used when this run initialises the data dir)
#   ENCLAVE_SWARM_POLICY_FILE      --policy, when the file exists and is not empty
#   ENCLAVE_SWARM_BOOTSTRAP_FILE   one --bootstrap per line (the bootstrap ConfigMap the operator
#                                  keeps: /dns4/<pod>.<service>.../tcp/4001/p2p/<peer id>; blank
#                                  lines, # comments and this pod's own line skipped)
#   ENCLAVE_SWARM_BOOTSTRAP_WAIT_S on any pod but ordinal 0, wait up to this long for that file
#                                  to name a node, then exit 1 if it still names none: a node
#                                  started with nobody to join would be a federation of its own,
#                                  so the pod restarts (with kubelet's backoff) until one is named
set -eu
if [ "${1:-}" = "run" ]; then
  shift
  set -- run "$@"
  [ -n "${ENCLAVE_SWARM_PROFILE:-}" ] && set -- "$@" --profile "$ENCLAVE_SWARM_PROFILE"
  [ -n "${ENCLAVE_SWARM_POLICY_FILE:-}" ] && [ -s "$ENCLAVE_SWARM_POLICY_FILE" ] \
    && set -- "$@" --policy "$ENCLAVE_SWARM_POLICY_FILE"
  f=${ENCLAVE_SWARM_BOOTSTRAP_FILE:-}
  if [ -n "$f" ]; then
    case "${HOSTNAME:-}" in
      *-0) ;;
      *) waited=0
         while [ "$waited" -lt "${ENCLAVE_SWARM_BOOTSTRAP_WAIT_S:-0}" ] \
               && ! grep -q '/p2p/' "$f" 2>/dev/null; do
           sleep 1; waited=$((waited + 1))
         done
         if [ "${ENCLAVE_SWARM_BOOTSTRAP_WAIT_S:-0}" -gt 0 ] && ! grep -q '/p2p/' "$f" 2>/dev/null; then
           echo "enclave-swarm: no node to join in $f after ${ENCLAVE_SWARM_BOOTSTRAP_WAIT_S} s" \
                "(the operator publishes node 0 there once an EnclaveFederation exists)" >&2
           exit 1
         fi ;;
    esac
    if [ -r "$f" ]; then
      while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        # our own entry (a restarted node): dialling ourselves joins nothing
        case "$line" in "/dns4/${HOSTNAME:-}."*) continue ;; esac
        set -- "$@" --bootstrap "$line"
      done < "$f"
    fi
  fi
fi
exec "${ENCLAVE_SWARM_BIN:-/opt/enclave-swarm/bin/enclave-swarm}" "$@"
