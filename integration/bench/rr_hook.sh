# shellcheck shell=bash
# Margay's hook for ../shared/bench/rr_bench.sh (TARGET=project): defines
# start_target_project with the contract of /work/shared/bench/README.md.
#
#   cargo build --profile dist -p margay-agent
#   PROJECT_HOOK=integration/bench/rr_hook.sh PROJECT_BIN=target/dist/margay-node \
#       ../shared/bench/rr_bench.sh project 100000 4
#
# start_target_project CONFDIR NS ADDR AS CLIENT_ADDR...
#   Writes CONFDIR/margay-rr.toml (the standalone speaker config documented in
#   bgp/src/config.rs), starts margay-node as an iBGP route reflector on
#   ADDR:179 in namespace NS, cluster id ADDR, every CLIENT_ADDR a passive
#   rr-client with next hop unchanged, IPv4 unicast only, no FIB; sets
#   TARGET_PID and adds it to PIDS so that the bench's cleanup stops it.
start_target_project() {
    local dir=$1 ns=$2 addr=$3 as=$4; shift 4
    local c
    : "${PROJECT_BIN:?set PROJECT_BIN to the margay-node binary}"
    {
        echo "# rr_bench: Margay route reflector under test"
        echo "router_id = \"$addr\""
        echo "asn = $as"
        echo "listen_address = \"$addr\""
        echo "listen_port = 179"
        echo "cluster_id = \"$addr\""
        for c in "$@"; do
            printf '\n[[peers]]\naddress = "%s"\nasn = %d\npassive = true\nrr_client = true\nnext_hop = "unchanged"\nfamilies = ["ipv4-unicast"]\n' "$c" "$as"
        done
    } >"$dir/margay-rr.toml"
    RUST_LOG=${MARGAY_LOG:-info} ip netns exec "$ns" "$PROJECT_BIN" \
        --role route-reflector --config "$dir/margay-rr.toml" \
        >"$dir/project.log" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
}
