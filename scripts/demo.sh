#!/usr/bin/env bash
# demo.sh — the README's demo command (`make demo`).
#
# On a fresh Debian 12 machine as root: installs what is missing, builds the binaries, brings up a
# lab of 3 nodes × 2 pods in network namespaces (real etcd, margay-node on each node, pods wired
# by margay-cni), prints its status and what margayctl sees (pools, nodes, every node's BGP
# status, IPAM), pings and probes across nodes and to the internet host through natOutgoing,
# blocks a ping with a NetworkPolicy and opens it again, and tears everything down again — also when a step fails (trap). The host's own namespace is never
# touched. The lab lives in $MARGAY_LAB_DIR (default /run/margay-lab-demo, so a lab of yours in
# the default /run/margay-lab is left alone).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (the lab creates network namespaces); e.g. sudo make demo" >&2
    exit 1
fi

step "system packages"
scripts/install-deps.sh

step "building margay-node, margay-cni, margayctl and margay-lab"
cargo build -q -p margay-agent -p margay-cni -p margay-ctl -p margay-integration --bins
TARGET=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
LAB="$TARGET/debug/margay-lab"
export MARGAY_LAB_DIR=${MARGAY_LAB_DIR:-/run/margay-lab-demo}

start=$(date +%s)
cleanup() {
    status=$?
    step "margay-lab down"
    "$LAB" down || status=1
    echo "demo took $(( $(date +%s) - start )) s after the build"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "margay-lab up --nodes 3 --pods-per-node 2"
"$LAB" up --nodes 3 --pods-per-node 2

step "margay-lab status"
"$LAB" status

step "margay-lab ctl get ippool -o wide"
"$LAB" ctl get ippool -o wide
step "margay-lab ctl get node -o wide"
"$LAB" ctl get node -o wide
step "margay-lab ctl node status --all"
"$LAB" ctl node status --all
step "margay-lab ctl ipam show"
"$LAB" ctl ipam show

step "ping across nodes: default/pod-1-1 -> default/pod-2-1 and default/pod-3-2"
"$LAB" ping default/pod-1-1 default/pod-2-1 -c 3
"$LAB" ping default/pod-1-1 default/pod-3-2 -c 3

step "a pod reaches the internet host through natOutgoing (seen as its node's address)"
"$LAB" internet default/pod-1-1

step "every pod to every pod on TCP port 80 (margay-lab probe --matrix 80/TCP)"
"$LAB" probe --matrix 80/TCP

step "a NetworkPolicy that denies all ingress to default/pod-2-1"
policy=$(mktemp --suffix=.yaml)
cat >"$policy" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-pod-2-1
  namespace: default
spec:
  podSelector:
    matchLabels:
      pod: pod-2-1
  policyTypes: [Ingress]
YAML
code=0
"$LAB" policy apply "$policy" || code=$?
rm -f "$policy"
if [ "$code" -eq 0 ]; then
    step "the same ping is blocked now"
    if "$LAB" ping default/pod-1-1 default/pod-2-1 -c 2; then
        echo "demo.sh: the policy did not block default/pod-1-1 -> default/pod-2-1" >&2
        exit 1
    fi
    echo "(blocked by the policy, as it should be)"
    "$LAB" probe --matrix 80/TCP
    step "margay-lab policy delete default/deny-pod-2-1: the ping goes through again"
    "$LAB" policy delete default/deny-pod-2-1
    "$LAB" ping default/pod-1-1 default/pod-2-1 -c 2
elif [ "$code" -eq 2 ]; then
    echo "(the policy is stored, but these agents do not enforce NetworkPolicy)"
else
    exit "$code"
fi
