#!/usr/bin/env bash
# A whole Shoal cluster on this machine, for trying it out and for the end-to-end tests.
#
#   deploy/devcluster.sh up [--agents N] [--rate BYTES_PER_S] [--tls [--proxy-tls]]
#                                                                start it (default 3 agents)
#   deploy/devcluster.sh status                                  what runs, where, its logs
#   deploy/devcluster.sh demo [--agents N] [--rate BYTES_PER_S] [--size MIB] [--tls [--proxy-tls]]
#                                                                push an image, pull it on every agent
#   deploy/devcluster.sh down [--wipe]                           stop it (--wipe: delete its data too)
#
# Every process listens on 127.0.0.1, on fixed ports:
#
#   origin-0, origin-1, origin-2   HTTP 9000, 9001, 9002    peer protocol 7000, 7001, 7002
#   tracker                        HTTP 7070
#   proxy                          registry 5000 (docker push 127.0.0.1:5000/app:tag)
#   agent-1 … agent-N              registry 8081 … 8080+N   peer protocol 7101 … 7100+N
#
# Each process has its config file, data directory and log under $SHOAL_DEVCLUSTER_DIR
# (default: .devcluster at the top of the repository): config/NAME.toml, data/NAME/,
# logs/NAME.log; run/NAME.pid holds its pid. The processes run in the background until
# `down`, which stops exactly the pids it recorded.
#
# The first `up` in a directory generates the cluster's credentials into secrets/ (readable
# by you alone, as is every config file that holds one): the write token (origins, proxy),
# the read token (tracker, agents), the metainfo signing key pair, and the proxy's login,
# user shoal with the password in secrets/proxy-password:
#
#   docker login localhost:5000 -u shoal --password-stdin < $SHOAL_DEVCLUSTER_DIR/secrets/proxy-password
#
# Pulls from the proxy and from the agents need no login.
#
# With --tls the parts speak TLS to each other: HTTPS to the origins and the tracker, the
# peer protocol over mutually authenticated TLS 1.3. The first `up --tls` makes a CA for the
# cluster and a certificate for each part from it, kept across `up`s and deleted by
# `down --wipe`: tls/ca.crt (what to trust: curl --cacert), tls/NAME.crt and tls/NAME.key,
# tls/trust/ca.crt (the CA alone, for skopeo --dest-cert-dir), and the CA's key in
# secrets/ca.key. The agents' registries (what docker and containerd pull from) and the
# proxy's stay plain HTTP on loopback; --proxy-tls serves the proxy's over HTTPS too.
# Without --tls every config says `[tls] plaintext = true`.
#
# This script builds the binaries and runs the cluster launcher, shoal-cluster (the crate in
# cluster/), which does all of the above; the end-to-end tests and the benchmarks use the
# same launcher.
#
# Environment:
#   SHOAL_DEVCLUSTER_DIR      where the cluster keeps its files (default <repo>/.devcluster)
#   SHOAL_DEVCLUSTER_PROFILE  cargo profile the binaries are built with: release (default) or dev
#   SHOAL_BIN_DIR             take shoal-origin, shoal-tracker, shoal-proxy and shoal-agent (and
#                             shoal-cluster, if it is there) from this directory instead of
#                             building them
#   CARGO_TARGET_DIR          honoured as cargo honours it
#   SHOAL_DEVCLUSTER_LOG      the processes' log filter (default info)
#   SHOAL_DEVCLUSTER_TIMEOUT  seconds to wait for every process to be ready (default 60)
#   SHOAL_DEMO_TIMEOUT        seconds the demo's pulls may take together (default 300)
#   SHOAL_DEMO_CLIENT         what the demo pushes and pulls with: skopeo, or http (its own plain
#                             registry requests, no other program needed) where skopeo is not
#                             installed (default: skopeo if found)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SHOAL_DEVCLUSTER_DIR:-$ROOT/.devcluster}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
PROFILE="${SHOAL_DEVCLUSTER_PROFILE:-release}"

say() { printf 'devcluster: %s\n' "$*"; }
die() {
  printf 'devcluster: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

[ $# -gt 0 ] || {
  usage
  exit 2
}
case "$1" in
  -h | --help | help)
    usage
    exit 0
    ;;
  up)
    for a in "${@:2}"; do
      case "$a" in -h | --help)
        usage
        exit 0
        ;;
      esac
    done
    ;;
  demo | status | down) ;;
  *)
    usage >&2
    exit 2
    ;;
esac

case "$PROFILE" in
  release) SUB=release ;;
  dev) SUB=debug ;;
  *) die "SHOAL_DEVCLUSTER_PROFILE must be release or dev, not '$PROFILE'" ;;
esac
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac

# Builds the named binaries with cargo, in the profile asked for.
build() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is not installed: install Rust (https://rustup.rs) or point SHOAL_BIN_DIR at built binaries"
  say "building $* ($PROFILE profile; a first build takes a few minutes)"
  local b pkgs=()
  for b in "$@"; do pkgs+=(-p "$b"); done
  (cd "$ROOT" && cargo build --locked --profile "$PROFILE" --bins "${pkgs[@]}") ||
    die "cargo build failed"
}

# `up` and `demo` start the parts; `status` and `down` only need the launcher.
parts=()
case "$1" in up | demo) parts=(shoal-origin shoal-tracker shoal-proxy shoal-agent) ;; esac

if [ -n "${SHOAL_BIN_DIR:-}" ]; then
  BIN_DIR="$(cd "$SHOAL_BIN_DIR" 2>/dev/null && pwd)" ||
    die "SHOAL_BIN_DIR=$SHOAL_BIN_DIR is not a directory"
  LAUNCHER="$BIN_DIR/shoal-cluster"
  if [ ! -x "$LAUNCHER" ]; then
    LAUNCHER="$TARGET/$SUB/shoal-cluster"
    [ -x "$LAUNCHER" ] || build shoal-cluster
  fi
else
  BIN_DIR="$TARGET/$SUB"
  LAUNCHER="$BIN_DIR/shoal-cluster"
  if [ ${#parts[@]} -gt 0 ]; then
    build "${parts[@]}" shoal-cluster
  elif [ ! -x "$LAUNCHER" ]; then
    build shoal-cluster
  fi
fi

exec "$LAUNCHER" --dir "$DIR" --default-dir "$ROOT/.devcluster" --bin-dir "$BIN_DIR" --as "$0" "$@"
