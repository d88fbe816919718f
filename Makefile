# Margay's entry points. Both work on a fresh Debian 12 machine as root.
.PHONY: test check build crds demo help

help:
	@echo "make test    install what is missing, lint, and run the whole test suite (as CI does)"
	@echo "make demo    install what is missing, build, bring up a 3-node lab with pods, show it, tear it down"
	@echo "make check   fmt + clippy only"
	@echo "make build   debug build of every binary"
	@echo "make crds    regenerate manifests/crds.yaml from the api crate"

crds:
	cargo run -q -p margay-api --example gen-crds > manifests/crds.yaml

test:
	scripts/test.sh

demo:
	scripts/demo.sh

check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

build:
	cargo build --workspace --bins
