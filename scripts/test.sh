#!/usr/bin/env bash
# test.sh — the README's test command (and CI's, through .ci/run).
#
# On a fresh Debian 12 machine as root: installs what is missing, checks formatting and lints,
# validates the manifests, then runs the whole test suite — including the tests that need root and
# network namespaces — and checks that the root network namespace is exactly as it was before.
# The output ends with nextest's summary.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export MARGAY_SHARED=${MARGAY_SHARED:-$ROOT/../shared}
if [ ! -d "$MARGAY_SHARED/tools" ]; then
    echo "test.sh: MARGAY_SHARED=$MARGAY_SHARED has no tools/ folder; point MARGAY_SHARED at the project's shared/ checkout" >&2
    exit 2
fi
export MARGAY_SHARED=$(cd "$MARGAY_SHARED" && pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if compgen -G "manifests/*.yaml" >/dev/null; then
    step "manifests against the Kubernetes 1.37 schemas and our CRDs"
    timeout 300 "$MARGAY_SHARED/tools/k8s-checks/validate-manifests.sh" manifests
fi

step "building the tests"
cargo nextest run --workspace --all-targets --no-run

before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
scripts/rootns-snapshot.sh >"$before"

step "the test suite (root-namespace state recorded; it must be unchanged afterwards)"
status=0
cargo nextest run --workspace --all-targets --profile ci --run-ignored all --no-fail-fast || status=$?

scripts/rootns-snapshot.sh >"$after"
if ! diff -u "$before" "$after" >&2; then
    echo "test.sh: FAILED: the test suite changed the root network namespace (diff above)." >&2
    echo "  Tests must create their own namespaces and never touch the root one." >&2
    exit 1
fi
exit "$status"
