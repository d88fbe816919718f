#!/usr/bin/env bash
# report.sh — every Margay benchmark beside its anchor, in one run, and the report.
#
#   integration/bench/report.sh            # root, ~25 min on 2 cores
#   QUICK=1 integration/bench/report.sh    # smaller sizes, one repetition (~8 min): a smoke run
#
# Runs, each measured against its anchor in the same run:
#   rr       route reflection: ../shared/bench/run_all.sh with TARGETS bird frr project (our
#            speaker through rr_hook.sh), N 10k/100k/1M, K 4 → converge time, RSS, CPU
#   agent    agent_bench.sh: 100k BGP-learned routes into the kernel vs BIRD and the batched
#            netlink limit (fib_bench.sh), RSS with 1k endpoints + 10k routes, endpoint_up latency
#   routes   the route driver alone vs nl_routes.py (cargo bench --bench routes)
#   policy   1k policies / 10k endpoints vs a plain iptables-restore, label changes
#            (cargo bench --bench policy) beside ipt_bench.sh 10000's noflush figure
#   cni      CNI ADD/DEL vs the reference ptp + host-local plugins (cargo bench --bench add)
#   ipam     allocations on etcd vs raw etcd creates (cargo bench --bench alloc)
#   lab      20 nodes × 50 pods through margay-lab: agent RSS; pod ready → reachable from
#            another node, p50/p99 (lab_bench.py)
# then integration/bench/report.py writes the tables between the report markers of
# docs/benchmarks.md and the convergence plot docs/img/rr-convergence.svg.
#
# Raw output: integration/bench/results/report-<UTC date>/ (one file per bench, stderr in *.log).
# ONLY="rr agent" runs a subset; the report then has only those sections, unless CARRY=DIR names an
# earlier results directory whose raw output of the other sections is copied in (and named as
# carried over in the report's run line).
# Everything runs in namespaces the benches make and delete; every daemon is a child stopped by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[[ $(id -u) -eq 0 ]] || { echo "report.sh: run as root (network namespaces)" >&2; exit 1; }
export MARGAY_SHARED=${MARGAY_SHARED:-$ROOT/../shared}
[[ -x $MARGAY_SHARED/bench/rr_bench.sh ]] || { echo "report.sh: $MARGAY_SHARED/bench/rr_bench.sh not found; set MARGAY_SHARED to the shared/ checkout" >&2; exit 2; }
export MARGAY_SHARED=$(cd "$MARGAY_SHARED" && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
QUICK=${QUICK:-0}
ONLY=${ONLY:-rr agent routes policy cni ipam lab}
OUT=${OUT:-$ROOT/integration/bench/results/report-$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$OUT"

step() { printf '\n==> [%s] %s\n' "$(date -u +%T)" "$*" >&2; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

step "system packages"
scripts/install-deps.sh >/dev/null

step "release build (once; every bench below reuses it) and the shipped margay-node (dist)"
cargo build --release --workspace --bins
cargo build --profile dist -p margay-agent --bins
cargo bench --no-run -p margay-agent -p margay-cni -p margay-ipam 2>&1 | tail -1
cargo bench --profile dev -p margay-integration --bench agent --no-run 2>&1 | tail -1

{
    echo "date=$(date -u +%FT%TZ) host=$(hostname) cores=$(nproc) kernel=$(uname -r) quick=$QUICK"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +dirty)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "bird=$(bird --version 2>&1 | head -1) frr=$(dpkg-query -W -f '${Version}' frr 2>/dev/null)"
} >"$OUT/meta.txt"

if want rr; then
    step "route reflection vs BIRD and FRR (run_all.sh)"
    if ((QUICK)); then rr_n="10000 100000" big=""; reps=1; else rr_n="10000 100000" big="1000000"; reps=${REPS:-3}; fi
    : >"$OUT/rr.txt"
    TARGETS=${RR_TARGETS:-bird frr project} RR_N=$rr_n RR_K=4 BIG_N=$big FIB_N="" IPT_N="" REPS=$reps \
        PROJECT_HOOK=$ROOT/integration/bench/rr_hook.sh PROJECT_BIN=$TARGET/dist/margay-node \
        "$MARGAY_SHARED/bench/run_all.sh" "$OUT/rr.txt" >/dev/null
fi

if want agent; then
    step "node agent: FIB install, RSS, endpoint_up (agent_bench.sh)"
    if ((QUICK)); then n=20000 reps=1; else n=100000 reps=${REPS:-3}; fi
    REPS=$reps integration/bench/agent_bench.sh "$n" >"$OUT/agent.txt" 2>"$OUT/agent.log"
fi

if want routes; then
    step "route driver vs batched netlink (bench routes)"
    cargo bench -q -p margay-agent --bench routes >"$OUT/routes.txt" 2>"$OUT/routes.log"
fi

if want policy; then
    step "NetworkPolicy programming vs plain iptables-restore (bench policy, ipt_bench.sh)"
    if ((QUICK)); then sizes="100 1000"; ipt=1000; else sizes="1000"; ipt=10000; fi
    MARGAY_BENCH_POLICY=$sizes cargo bench -q -p margay-agent --bench policy >"$OUT/policy.txt" 2>"$OUT/policy.log"
    "$MARGAY_SHARED/bench/ipt_bench.sh" "$ipt" >"$OUT/ipt.txt" 2>"$OUT/ipt.log"
fi

if want cni; then
    step "CNI ADD/DEL vs ptp + host-local (bench add)"
    cargo bench -q -p margay-cni --bench add >"$OUT/cni.txt" 2>"$OUT/cni.log"
fi

if want ipam; then
    step "IPAM on etcd vs raw etcd creates (bench alloc)"
    cargo bench -q -p margay-ipam --bench alloc >"$OUT/ipam.txt" 2>"$OUT/ipam.log"
fi

if want lab; then
    step "a cluster on this host: agent RSS, pod ready → reachable (lab_bench.py)"
    if ((QUICK)); then args="5 20 30"; else args="20 50 50"; fi
    # shellcheck disable=SC2086
    MARGAY_LAB_BIN=$TARGET/release/margay-lab timeout 1800 python3 integration/bench/lab_bench.py $args \
        >"$OUT/lab.txt" 2>"$OUT/lab.log"
fi

if [[ -n ${CARRY:-} ]]; then
    carried=()
    for b in rr agent routes policy cni ipam lab; do
        want "$b" && continue
        files=("$CARRY/$b".txt*)
        [[ $b == policy && -e $CARRY/ipt.txt ]] && files+=("$CARRY"/ipt.txt*)
        [[ -e ${files[0]} ]] || continue
        cp "${files[@]}" "$OUT/"
        carried+=("$b")
    done
    ((${#carried[@]})) && echo "carried=${carried[*]} from $(basename "$CARRY")" >>"$OUT/meta.txt"
fi

step "report"
python3 integration/bench/report.py "$OUT" docs/benchmarks.md docs/img/rr-convergence.svg
echo "raw results: $OUT" >&2
