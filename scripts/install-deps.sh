#!/usr/bin/env bash
# install-deps.sh — install every system package Margay's build, tests and lab need.
#
# Idempotent: installs only what is missing, running `apt-get update` once first. Services that
# Debian would start on install (etcd, bird, frr) are kept from starting, so nothing runs in the
# root network namespace: tests start their own daemons inside namespaces they create.
set -euo pipefail

PACKAGES=(
    # build
    protobuf-compiler libprotobuf-dev pkg-config
    # jemalloc (the agent's allocator) is built from source by tikv-jemalloc-sys
    make gcc libc6-dev
    # kernel networking tools the tests and the agent drive
    iproute2 iptables ipset nftables iputils-ping procps kmod
    # real peers and datastore for interop and end-to-end tests
    etcd-server etcd-client bird2 gobgpd frr
    # real CNI clients (shared/tools/cni-clients): libcni's cnitool is built from these
    golang-go golang-github-appc-cni-dev containernetworking-plugins
    podman runc conmon busybox-static containerd python3-grpcio
    # the lab's topology picture (margay-lab status --svg)
    graphviz
    # scripts and manifest validation
    python3 python3-venv jq curl ca-certificates openssl
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (the tests create network namespaces); e.g. sudo $0" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps.sh: installing ${missing[*]}" >&2
    # Keep services from starting at install time (Debian starts etcd, bird and frr otherwise).
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$guard"
        chmod +x "$guard"
        trap 'rm -f "$guard"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# The Rust toolchain and cargo-nextest come with the machine image; nextest is installed from
# crates.io if a machine lacks it.
command -v cargo >/dev/null || { echo "install-deps.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install-deps.sh: installing cargo-nextest" >&2
    cargo install --locked cargo-nextest >&2
fi
