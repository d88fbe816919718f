#!/usr/bin/env bash
# agent_bench.sh [N] — benchmarks the node agent (margay-node) against its anchors, in the same
# run, and prints a Markdown table (see integration/bench/agent.rs for what is measured):
#   * install of N (default 100000) BGP-learned routes vs fib_bench.sh's bird_install_s, nl_add_s
#   * RSS with EPS (1000) local endpoints and REMOTE (10000) remote routes (goal ≤ 30 MiB)
#   * endpoint_up → route in the kernel, p50/p99 over those endpoints
# Root. Builds the shipped margay-node once (the `dist` profile, reusing CARGO_TARGET_DIR), then
# runs the bench harness (`cargo bench --bench agent`, dev profile: it only drives and times the
# binary). Environment: REPS (3), EPS, REMOTE, KEEP=1 (keep the work dir), MARGAY_SHARED.
# Namespaces are the harness's (mgyt-*), deleted on exit; the bench is a child of this script,
# recorded by PID and stopped by it on Ctrl-C or TERM.
set -euo pipefail

[[ $# -le 1 && ${1:-1} =~ ^[0-9]+$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }
N=${1:-100000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export MARGAY_SHARED=${MARGAY_SHARED:-/work/shared}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $(id -u) -eq 0 ]] || { echo "agent_bench: run as root (network namespaces)" >&2; exit 1; }

PIDS=()
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "[agent_bench] building the shipped margay-node (profile dist)" >&2
cargo build --profile dist -p margay-agent --bins
echo "[agent_bench] building the bench driver" >&2
cargo bench --profile dev -p margay-integration --bench agent --no-run
MARGAY_NODE_BIN=$TARGET/dist/margay-node \
    timeout --signal=TERM 3600 cargo bench --profile dev -p margay-integration --bench agent -- "$N" &
PIDS+=("$!")
wait "${PIDS[0]}"
