#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need on a fresh machine, then
# checks formatting and lints, then runs every test (the end-to-end ones with real docker,
# skopeo, podman and containerd included).
set -euo pipefail
cd "$(dirname "$0")"

./tests/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
