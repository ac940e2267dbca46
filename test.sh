#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the system tests need on a fresh machine,
# then checks formatting and lints, then runs every test, the system tests included (the
# `system-tests` features: the end-to-end ones with real docker, skopeo, podman and
# containerd, the deployment files with Helm's own engine, the clients' tests). A plain
# `cargo test --workspace` runs every test that needs nothing but Rust.
set -euo pipefail
cd "$(dirname "$0")"

./tests/install-deps.sh

FEATURES=shoal-tests/system-tests,shoal-origin/system-tests,shoal-tracker/system-tests,shoal-agent/system-tests,shoal-proxy/system-tests
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked --features "$FEATURES" -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --features "$FEATURES"
