#!/usr/bin/env bash
# Start a Dask scheduler for melpipe on this host, in the foreground.
#
#   HOST=10.0.0.5 cluster/local/start-scheduler.sh          # bind to one address
#   INTERFACE=eth1 cluster/local/start-scheduler.sh         # or to one interface
#   TLS_DIR=certs HOST=10.0.0.5 cluster/local/start-scheduler.sh   # require TLS
#
# Environment: HOST or INTERFACE (default: 127.0.0.1 only), PORT (8786), TLS_DIR (a folder
# with ca.pem, node.pem and node.key, as make-certs.sh writes; clients and workers must
# then present certificates signed by that CA), SCHEDULER_FILE (write the address there),
# DASHBOARD (the dashboard's address, default 127.0.0.1:8787; needs bokeh).
#
# A Dask scheduler runs whatever code any client sends it, and its dashboard shows logs
# and call stacks. Bind it only where your workers and clients are, use TLS_DIR on any
# network you do not control, and reach the dashboard through `ssh -L 8787:127.0.0.1:8787`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DASK_CONFIG="${DASK_CONFIG:-$here/../dask}"

args=(--port "${PORT:-8786}" --dashboard-address "${DASHBOARD:-127.0.0.1:8787}")
if [[ -n "${INTERFACE:-}" ]]; then
    args+=(--interface "$INTERFACE")
else
    args+=(--host "${HOST:-127.0.0.1}")
fi
[[ -n "${SCHEDULER_FILE:-}" ]] && args+=(--scheduler-file "$SCHEDULER_FILE")
if [[ -n "${TLS_DIR:-}" ]]; then
    args+=(--protocol tls --tls-ca-file "$TLS_DIR/ca.pem"
           --tls-cert "$TLS_DIR/node.pem" --tls-key "$TLS_DIR/node.key")
fi
exec dask scheduler "${args[@]}"
