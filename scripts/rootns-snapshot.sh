#!/usr/bin/env bash
# rootns-snapshot.sh — print the state of the root network namespace that tests must never change.
#
# Routes (all tables, both families), links and addresses, iptables/ip6tables rules, the nft
# ruleset, ipsets, forwarding sysctls and the list of named network namespaces. Counters and
# other values that change on their own (packet statistics, address lifetimes) are left out, so
# two snapshots of an untouched namespace are identical. The test command diffs one taken before
# the suite with one taken after.
set -uo pipefail

section() { printf '### %s\n' "$1"; }

section "links"
# name, flags, mtu, master, kind; not state counters or qdisc stats.
ip -o link show | sed -E 's/^[0-9]+: //; s/ (qlen|link-netnsid) [0-9]+//g; s/\\ +/ /g' | sort
section "addresses"
ip -o addr show | awk '{ $1=""; print }' | sed -E 's/ (valid_lft|preferred_lft) [^ ]+//g' | sort
section "routes"
ip -4 route show table all 2>/dev/null | sed -E 's/ expires [0-9]+sec//' | sort
ip -6 route show table all 2>/dev/null | sed -E 's/ expires [0-9]+sec//' | sort
section "rules"
ip -4 rule show; ip -6 rule show
section "iptables"
for t in iptables-save ip6tables-save; do
    command -v "$t" >/dev/null && "$t" 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
done
section "nft"
command -v nft >/dev/null && nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
section "ipsets"
command -v ipset >/dev/null && ipset list -n 2>/dev/null | sort
section "sysctls"
sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.all.rp_filter 2>/dev/null
section "netns"
ip netns list 2>/dev/null | awk '{print $1}' | sort
