#!/usr/bin/env bash
# Start melpipe's Dask workers on this host, in the foreground: one single-threaded
# worker process per core by default, which suits melpipe's per-batch tasks.
#
#   cluster/local/start-workers.sh tcp://10.0.0.5:8786
#   TLS_DIR=certs INTERFACE=eth1 cluster/local/start-workers.sh tls://10.0.0.5:8786
#
# Environment: NWORKERS (default: auto, one per core), HOST or INTERFACE (the address the
# workers bind to and advertise; default 127.0.0.1 only, for a scheduler on this host),
# TLS_DIR (as for start-scheduler.sh), NAME (a prefix for worker names).
set -euo pipefail
if [[ $# -ne 1 ]]; then
    echo "usage: $0 SCHEDULER_ADDRESS" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
export DASK_CONFIG="${DASK_CONFIG:-$here/../dask}"

args=(--nworkers "${NWORKERS:-auto}" --nthreads 1 --no-dashboard)
if [[ -n "${INTERFACE:-}" ]]; then
    args+=(--interface "$INTERFACE")
else
    args+=(--host "${HOST:-127.0.0.1}")
fi
[[ -n "${NAME:-}" ]] && args+=(--name "$NAME")
if [[ -n "${TLS_DIR:-}" ]]; then
    args+=(--tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/node.pem"
           --tls-key "$TLS_DIR/node.key")
fi
exec dask worker "$1" "${args[@]}"
