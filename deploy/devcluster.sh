#!/usr/bin/env bash
# A whole Shoal cluster on this machine, for trying it out and for the end-to-end tests.
#
#   deploy/devcluster.sh up [--agents N] [--rate BYTES_PER_S]   start it (default 3 agents)
#   deploy/devcluster.sh status                                  what runs, where, its logs
#   deploy/devcluster.sh demo [--agents N] [--rate BYTES_PER_S] [--size MIB]
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
# Environment:
#   SHOAL_DEVCLUSTER_DIR      where the cluster keeps its files (default <repo>/.devcluster)
#   SHOAL_DEVCLUSTER_PROFILE  cargo profile the binaries are built with: release (default) or dev
#   SHOAL_BIN_DIR             take shoal-origin, shoal-tracker, shoal-proxy and shoal-agent from
#                             this directory instead of building them
#   CARGO_TARGET_DIR          honoured as cargo honours it
#   SHOAL_DEVCLUSTER_LOG      the processes' log filter (default info)
#   SHOAL_DEVCLUSTER_TIMEOUT  seconds to wait for every process to be ready (default 60)
#   SHOAL_DEMO_TIMEOUT        seconds the demo's pulls may take together (default 300)
#   SHOAL_DEMO_CLIENT         what the demo pushes and pulls with: skopeo, or curl (plain registry
#                             requests) where skopeo is not installed (default: skopeo if found)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SHOAL_DEVCLUSTER_DIR:-$ROOT/.devcluster}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
PROFILE="${SHOAL_DEVCLUSTER_PROFILE:-release}"
LOG_FILTER="${SHOAL_DEVCLUSTER_LOG:-info}"
READY_TIMEOUT="${SHOAL_DEVCLUSTER_TIMEOUT:-60}"
HOST=127.0.0.1

ORIGINS=3
ORIGIN_HTTP_BASE=9000
ORIGIN_PEER_BASE=7000
TRACKER_PORT=7070
PROXY_PORT=5000
AGENT_HTTP_BASE=8080
AGENT_PEER_BASE=7100
MAX_AGENTS=20
DEFAULT_AGENTS=3
# Seconds between SIGTERM and SIGKILL on `down`. The processes are configured to finish
# requests in flight within 2s, so this is only for one that hangs.
STOP_GRACE=10

say() { printf 'devcluster: %s\n' "$*"; }
die() {
  printf 'devcluster: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- the cluster's shape

origin_url() { echo "http://$HOST:$((ORIGIN_HTTP_BASE + $1))"; }
origin_list() {
  local i out=""
  for ((i = 0; i < ORIGINS; i++)); do out+="${out:+, }\"$(origin_url "$i")\""; done
  echo "[$out]"
}
agent_port() { echo $((AGENT_HTTP_BASE + $1)); }
agent_peer_port() { echo $((AGENT_PEER_BASE + $1)); }

# The names of the processes of a cluster with $1 agents, in start order.
names() {
  local i
  for ((i = 0; i < ORIGINS; i++)); do echo "origin-$i"; done
  echo tracker
  echo proxy
  for ((i = 1; i <= $1; i++)); do echo "agent-$i"; done
}

# The address whose /ready tells whether NAME can serve.
http_addr() {
  case "$1" in
    origin-*) echo "$HOST:$((ORIGIN_HTTP_BASE + ${1#origin-}))" ;;
    tracker) echo "$HOST:$TRACKER_PORT" ;;
    proxy) echo "$HOST:$PROXY_PORT" ;;
    agent-*) echo "$HOST:$(agent_port "${1#agent-}")" ;;
  esac
}

# Every port NAME listens on.
ports_of() {
  case "$1" in
    origin-*) echo "$((ORIGIN_HTTP_BASE + ${1#origin-})) $((ORIGIN_PEER_BASE + ${1#origin-}))" ;;
    tracker) echo "$TRACKER_PORT" ;;
    proxy) echo "$PROXY_PORT" ;;
    agent-*) echo "$(agent_port "${1#agent-}") $(agent_peer_port "${1#agent-}")" ;;
  esac
}

binary_of() {
  case "$1" in
    origin-*) echo shoal-origin ;;
    tracker) echo shoal-tracker ;;
    proxy) echo shoal-proxy ;;
    agent-*) echo shoal-agent ;;
  esac
}

pidfile() { echo "$DIR/run/$1.pid"; }
secret_of() { echo "$DIR/secrets/$1"; }
PROXY_USER=shoal
config_of() { echo "$DIR/config/$1.toml"; }
log_of() { echo "$DIR/logs/$1.log"; }

# ---------------------------------------------------------------- processes

# The pid recorded for NAME if that process still runs and is the one we started (its
# command line names its config file, so a recycled pid is never taken for it).
live_pid() {
  local f pid
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(config_of "$1")" || return 1
  echo "$pid"
}

# Names of the processes recorded in the run directory, whatever the cluster's size.
recorded_names() {
  local f
  [ -d "$DIR/run" ] || return 0
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    basename "$f" .pid
  done
}

port_in_use() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Whether pid $1 still runs. A zombie does not: the processes `up` started are its children
# until it returns, and one that has exited stays a zombie until that shell ends.
running_pid() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# Stops the named processes: SIGTERM to all of them, then SIGKILL to any still running
# after STOP_GRACE seconds. Pid files of stopped processes are removed.
stop_names() {
  local name pid pids=() waited=0 any
  for name in "$@"; do
    if pid="$(live_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
    rm -f "$(pidfile "$name")"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  while :; do
    any=0
    for entry in "${pids[@]}"; do
      running_pid "${entry#*:}" && any=1
    done
    [ "$any" -eq 1 ] || break
    if [ "$waited" -ge $((STOP_GRACE * 10)) ]; then
      for entry in "${pids[@]}"; do
        if running_pid "${entry#*:}"; then
          say "${entry%%:*} (pid ${entry#*:}) did not stop within ${STOP_GRACE}s: killing it"
          kill -KILL "${entry#*:}" 2>/dev/null || true
        fi
      done
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# Starts NAME in its own session (so that a Ctrl-C or a closed terminal after `up` leaves it
# running), with stdin, stdout and stderr off the caller's terminal or pipes.
start_one() {
  local name="$1" bin pid
  bin="$BIN_DIR/$(binary_of "$name")"
  mkdir -p "$DIR/run" "$DIR/logs"
  printf '\n==== %s started %s\n' "$name" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$(log_of "$name")"
  # NO_COLOR: the logs are files, read with less and grep, not a terminal.
  NO_COLOR=1 setsid "$bin" --config "$(config_of "$name")" --log "$LOG_FILTER" \
    </dev/null >>"$(log_of "$name")" 2>&1 &
  pid=$!
  echo "$pid" >"$(pidfile "$name")"
  STARTED+=("$name")
  # Until the child has exec'd, its command line is this script's and live_pid would take it
  # for gone; wait for the exec (or the child's end) so that readiness checks are not fooled.
  local tries=0
  until live_pid "$name" >/dev/null || ! running_pid "$pid" || [ "$tries" -ge 500 ]; do
    sleep 0.01
    tries=$((tries + 1))
  done
}

# Waits until every named process answers /ready, or fails naming the one that does not
# (with the end of its log when it has exited).
wait_ready() {
  local deadline name pending
  deadline=$(($(date +%s) + READY_TIMEOUT))
  pending=("$@")
  while [ ${#pending[@]} -gt 0 ]; do
    local still=()
    for name in "${pending[@]}"; do
      if ! live_pid "$name" >/dev/null; then
        echo "---- last lines of $(log_of "$name"):" >&2
        tail -n 20 "$(log_of "$name")" >&2 || true
        die "$name exited while starting (its log: $(log_of "$name"))"
      fi
      if ! curl -fsS -o /dev/null --max-time 2 "http://$(http_addr "$name")/ready" 2>/dev/null; then
        still+=("$name")
      fi
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -gt 0 ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "not ready within ${READY_TIMEOUT}s: ${pending[*]} (logs in $DIR/logs/)"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- binaries

resolve_binaries() {
  local agents="$1" bins=(shoal-origin shoal-tracker shoal-proxy) b missing=()
  [ "$agents" -gt 0 ] && bins+=(shoal-agent)
  if [ -n "${SHOAL_BIN_DIR:-}" ]; then
    BIN_DIR="$(cd "$SHOAL_BIN_DIR" && pwd)" || die "SHOAL_BIN_DIR=$SHOAL_BIN_DIR is not a directory"
  else
    local sub
    case "$PROFILE" in
      release) sub=release ;;
      dev) sub=debug ;;
      *) die "SHOAL_DEVCLUSTER_PROFILE must be release or dev, not '$PROFILE'" ;;
    esac
    command -v cargo >/dev/null 2>&1 ||
      die "cargo is not installed: install Rust (https://rustup.rs) or point SHOAL_BIN_DIR at built binaries"
    local pkgs=()
    for b in "${bins[@]}"; do pkgs+=(-p "$b"); done
    say "building ${bins[*]} ($PROFILE profile; a first build takes a few minutes)"
    (cd "$ROOT" && cargo build --locked --profile "$PROFILE" --bins "${pkgs[@]}") ||
      die "cargo build failed"
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$BIN_DIR" in /*) ;; *) BIN_DIR="$ROOT/$BIN_DIR" ;; esac
    BIN_DIR="$BIN_DIR/$sub"
  fi
  for b in "${bins[@]}"; do
    [ -x "$BIN_DIR/$b" ] || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] || die "not found in $BIN_DIR: ${missing[*]}"
}

# ---------------------------------------------------------------- credentials

# Generates the cluster's credentials once per directory, each in a file of its own that
# only the user can read; a second `up` keeps them, so logins and tokens stay valid.
make_credentials() {
  local s="$DIR/secrets"
  (
    umask 077
    mkdir -p "$s"
    chmod 700 "$s"
    command -v openssl >/dev/null 2>&1 ||
      die "openssl is not installed, and the cluster's credentials are made with it (Debian: apt-get install openssl)"
    [ -s "$s/write-token" ] || openssl rand -hex 32 >"$s/write-token"
    [ -s "$s/read-token" ] || openssl rand -hex 32 >"$s/read-token"
    if [ ! -s "$s/metainfo-key.pem" ]; then
      openssl genpkey -algorithm ed25519 -out "$s/metainfo-key.pem" 2>/dev/null ||
        die "openssl cannot make an Ed25519 key"
      rm -f "$s/metainfo-pub.pem"
    fi
    [ -s "$s/metainfo-pub.pem" ] ||
      openssl pkey -in "$s/metainfo-key.pem" -pubout -out "$s/metainfo-pub.pem"
    [ -s "$s/proxy-password" ] || openssl rand -hex 16 >"$s/proxy-password"
    if [ ! -s "$s/htpasswd" ] || [ "$s/proxy-password" -nt "$s/htpasswd" ]; then
      "$BIN_DIR/shoal-proxy" htpasswd "$PROXY_USER" <"$s/proxy-password" >"$s/htpasswd.new" ||
        die "shoal-proxy htpasswd failed"
      mv "$s/htpasswd.new" "$s/htpasswd"
    fi
    chmod 600 "$s"/*
  )
}

# A TOML basic string of a file's first line.
token_of() { printf '"%s"' "$(head -n 1 "$(secret_of "$1")")"; }

# A TOML multi-line literal string of a PEM file (PEM holds no ''').
pem_of() { printf "'''\n%s\n'''" "$(cat "$(secret_of "$1")")"; }

# ---------------------------------------------------------------- configs

write_configs() {
  local agents="$1" rate="$2" i name members rate_toml
  members="$(origin_list)"
  if [[ "$rate" =~ ^[0-9]+$ ]]; then rate_toml="$rate"; else rate_toml="\"$rate\""; fi
  # Every config file holds a credential: only the user may read them.
  umask 077
  mkdir -p "$DIR/config" "$DIR/data/backend"
  local write_token read_token metainfo_key metainfo_pub
  write_token="$(token_of write-token)"
  read_token="$(token_of read-token)"
  metainfo_key="$(pem_of metainfo-key.pem)"
  metainfo_pub="$(pem_of metainfo-pub.pem)"
  for ((i = 0; i < ORIGINS; i++)); do
    name="origin-$i"
    mkdir -p "$DIR/data/$name"
    cat >"$(config_of "$name")" <<EOF
# Written by deploy/devcluster.sh; deploy/config/origin.toml documents every key.
listen = "$HOST:$((ORIGIN_HTTP_BASE + i))"
data_dir = "$DIR/data/$name"
advertise_url = "$(origin_url "$i")"
replicas = 3
shutdown_grace = "2s"

[credentials]
write_token = $write_token
read_token = $read_token
metainfo_key = $metainfo_key

[cluster]
members = $members

[backend]
kind = "filesystem"
# One directory for all three, as a shared bucket would be.
path = "$DIR/data/backend"

[peer]
listen = "$HOST:$((ORIGIN_PEER_BASE + i))"
# Bytes per second over the peer protocol, 0 = unlimited (up --rate).
egress = $rate_toml
ingress = $rate_toml
EOF
  done
  cat >"$(config_of tracker)" <<EOF
# Written by deploy/devcluster.sh; deploy/config/tracker.toml documents every key.
listen = "$HOST:$TRACKER_PORT"
origins = $members
replicas = 3
# Short, so that agents that start a download together find each other quickly.
announce_interval = "1s"
shutdown_grace = "2s"

[credentials]
read_token = $read_token
EOF
  mkdir -p "$DIR/data/proxy"
  cat >"$(config_of proxy)" <<EOF
# Written by deploy/devcluster.sh; deploy/config/proxy.toml documents every key.
listen = "$HOST:$PROXY_PORT"
origins = $members
shutdown_grace = "2s"

[credentials]
write_token = $write_token

[auth]
# Pushes need the login (user $PROXY_USER, password in $(secret_of proxy-password)); pulls do not.
htpasswd = "$(secret_of htpasswd)"
anonymous_pull = true

[uploads]
spool_dir = "$DIR/data/proxy"
EOF
  for ((i = 1; i <= agents; i++)); do
    name="agent-$i"
    mkdir -p "$DIR/data/$name"
    cat >"$(config_of "$name")" <<EOF
# Written by deploy/devcluster.sh; deploy/config/agent.toml documents every key.
listen = "$HOST:$(agent_port "$i")"
tracker = "http://$HOST:$TRACKER_PORT"
origins = $members
shutdown_grace = "2s"

[credentials]
read_token = $read_token
metainfo_keys = $metainfo_pub

[cache]
dir = "$DIR/data/$name"
max_size = "4GiB"

[peer]
listen = "$HOST:$(agent_peer_port "$i")"
# Bytes per second, 0 = unlimited (up --rate).
egress = $rate_toml
ingress = $rate_toml
EOF
  done
}

# ---------------------------------------------------------------- commands

# Reads the recorded shape of the cluster: AGENTS and RATE.
load_state() {
  AGENTS=""
  RATE=""
  [ -f "$DIR/cluster.env" ] || return 1
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  [ -n "$AGENTS" ]
}

running_names() {
  local name
  for name in $(recorded_names); do
    live_pid "$name" >/dev/null && echo "$name"
  done
  return 0
}

parse_rate() {
  [[ "$1" =~ ^[0-9]+$ || "$1" =~ ^[0-9]+(\.[0-9]+)?[[:space:]]*([kKMGT]i?B|B)(/s)?$ ]] ||
    die "--rate takes bytes per second, such as 10000000 or 10MiB, not '$1'"
  echo "${1%/s}"
}

cmd_up() {
  local agents="$DEFAULT_AGENTS" rate=0 i
  while [ $# -gt 0 ]; do
    case "$1" in
      --agents)
        [ $# -ge 2 ] || die "--agents needs a number"
        agents="$2"
        shift 2
        ;;
      --rate)
        [ $# -ge 2 ] || die "--rate needs a number of bytes per second"
        rate="$(parse_rate "$2")"
        shift 2
        ;;
      -h | --help) usage && exit 0 ;;
      *) die "up: unknown argument '$1' (up [--agents N] [--rate BYTES_PER_S])" ;;
    esac
  done
  if ! [[ "$agents" =~ ^[0-9]+$ ]] || [ "$agents" -gt "$MAX_AGENTS" ]; then
    die "--agents takes a number from 0 to $MAX_AGENTS, not '$agents'"
  fi

  local running
  running="$(running_names)"
  if [ -n "$running" ]; then
    if load_state && [ "$AGENTS" = "$agents" ] && [ "$RATE" = "$rate" ] &&
      [ "$(echo "$running" | sort)" = "$(names "$agents" | sort)" ]; then
      say "already running in $DIR"
      print_endpoints "$agents"
      return 0
    fi
    die "a different cluster (or part of one) runs from $DIR: $(echo "$running" | tr '\n' ' ')- run '$0 down' first"
  fi

  local name port busy=()
  for name in $(names "$agents"); do
    for port in $(ports_of "$name"); do
      port_in_use "$port" && busy+=("$port ($name)")
    done
  done
  if [ ${#busy[@]} -gt 0 ]; then
    local hint="is a cluster from another directory running?"
    if [ "$DIR" != "$ROOT/.devcluster" ] && [ -n "$(DIR="$ROOT/.devcluster" running_names)" ]; then
      hint="the cluster in $ROOT/.devcluster runs: stop it with 'SHOAL_DEVCLUSTER_DIR=$ROOT/.devcluster $0 down'"
    fi
    die "ports already in use: ${busy[*]}; $hint"
  fi

  resolve_binaries "$agents"
  mkdir -p "$DIR"
  make_credentials
  write_configs "$agents" "$rate"
  printf 'AGENTS=%s\nRATE=%q\n' "$agents" "$rate" >"$DIR/cluster.env"

  # From here on a failure stops whatever was started, so nothing is left running.
  STARTED=()
  # shellcheck disable=SC2154 # status is assigned inside the trap
  trap 'status=$?; trap - EXIT INT TERM; if [ $status -ne 0 ] && [ ${#STARTED[@]} -gt 0 ]; then
          say "stopping what was started"; stop_names "${STARTED[@]}"; fi; exit $status' EXIT
  trap 'exit 130' INT TERM

  local origins=() agents_names=()
  for ((i = 0; i < ORIGINS; i++)); do origins+=("origin-$i"); done
  for ((i = 1; i <= agents; i++)); do agents_names+=("agent-$i"); done

  say "starting ${#origins[@]} origins, the tracker, the proxy and $agents agent$([ "$agents" = 1 ] || echo s) in $DIR"
  for name in "${origins[@]}"; do start_one "$name"; done
  wait_ready "${origins[@]}"
  start_one tracker
  start_one proxy
  wait_ready tracker proxy
  if [ "$agents" -gt 0 ]; then
    for name in "${agents_names[@]}"; do start_one "$name"; done
    wait_ready "${agents_names[@]}"
  fi
  trap - EXIT INT TERM
  say "ready"
  print_endpoints "$agents"
}

print_endpoints() {
  local agents="$1" i
  echo
  echo "  login:   docker login localhost:$PROXY_PORT -u $PROXY_USER --password-stdin < $(secret_of proxy-password)"
  echo "  push:    docker push localhost:$PROXY_PORT/app:tag        (proxy, http://$HOST:$PROXY_PORT)"
  for ((i = 1; i <= agents; i++)); do
    printf '  pull:    docker pull localhost:%s/app:tag        (agent-%s, peer port %s)\n' \
      "$(agent_port "$i")" "$i" "$(agent_peer_port "$i")"
  done
  echo "  origins: $(origin_list | tr -d '[]"')"
  echo "  tracker: http://$HOST:$TRACKER_PORT"
  echo "  every part serves /health, /ready and /metrics on its HTTP port"
  echo "  secrets: $DIR/secrets/ (write-token, read-token, metainfo-key.pem, proxy-password; mode 0600)"
  echo "  files:   $DIR/{config,data,logs}/   status: $0 status   stop: $0 down"
  echo
}

cmd_status() {
  [ $# -eq 0 ] || die "status takes no arguments"
  local names_all name pid state
  names_all="$(recorded_names)"
  if load_state; then
    names_all="$(printf '%s\n%s\n' "$(names "$AGENTS")" "$names_all" | awk 'NF && !seen[$0]++')"
  fi
  if [ -z "$names_all" ]; then
    say "no cluster in $DIR"
    return 0
  fi
  printf '%-10s %-8s %-8s %-22s %s\n' NAME PID STATE HTTP LOG
  for name in $names_all; do
    if pid="$(live_pid "$name")"; then
      if curl -fsS -o /dev/null --max-time 2 "http://$(http_addr "$name")/ready" 2>/dev/null; then
        state=ready
      else
        state=starting
      fi
    else
      pid=-
      state=stopped
    fi
    printf '%-10s %-8s %-8s %-22s %s\n' "$name" "$pid" "$state" "$(http_addr "$name")" "$(log_of "$name")"
  done
  [ -z "${RATE:-}" ] || [ "$RATE" = 0 ] || echo "every agent's egress and ingress are capped at $RATE bytes/s"
  echo "configs in $DIR/config/, data in $DIR/data/"
}

cmd_down() {
  local wipe=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --wipe) wipe=1 ;;
      *) die "down: unknown argument '$1' (down [--wipe])" ;;
    esac
    shift
  done
  local all
  all="$(recorded_names)"
  if [ -n "$all" ]; then
    local running
    running="$(running_names)"
    if [ -n "$running" ]; then
      say "stopping $(echo "$running" | tr '\n' ' ')"
    fi
    # shellcheck disable=SC2086
    stop_names $all
  else
    say "nothing runs from $DIR"
  fi
  if [ "$wipe" -eq 1 ] && [ -d "$DIR" ]; then
    # Only a directory this script made is deleted: a mistyped SHOAL_DEVCLUSTER_DIR is not.
    if [ -f "$DIR/cluster.env" ] || [ -d "$DIR/run" ]; then
      rm -rf "$DIR"
      say "deleted $DIR"
    else
      die "$DIR does not look like a cluster directory (no cluster.env); not deleting it"
    fi
  elif [ -d "$DIR" ]; then
    say "data and logs kept in $DIR (down --wipe deletes them)"
  fi
}

# ---------------------------------------------------------------- demo

DEMO_REPO=demo/app
DEMO_TIMEOUT="${SHOAL_DEMO_TIMEOUT:-300}"
DEMO_TAG=v1

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# Writes a blob into the OCI layout $1 and prints its hex digest.
put_blob() {
  local layout="$1" file="$2" hex
  hex="$(sha256_of "$file")"
  mkdir -p "$layout/blobs/sha256"
  mv "$file" "$layout/blobs/sha256/$hex"
  echo "$hex"
}

# Builds a two-layer image as an OCI layout in $1, with $2 MiB of incompressible data, from
# nothing but tar and /dev/urandom: no registry is asked for a base image. Sets DEMO_BLOBS
# (every blob's hex digest) and DEMO_MANIFEST (the manifest's).
build_demo_image() {
  local layout="$1" mib="$2" work="$1.work" big small l1 l2 cfg man
  big=$((mib * 3 / 4))
  [ "$big" -gt 0 ] || big=1
  small=$((mib - big))
  [ "$small" -gt 0 ] || small=1
  mkdir -p "$work/l1/etc" "$work/l1/data" "$work/l2/data" "$layout"
  printf 'Delivered by Shoal, %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$work/l1/etc/shoal-demo"
  head -c "$((big * 1024 * 1024))" /dev/urandom >"$work/l1/data/part-1"
  head -c "$((small * 1024 * 1024))" /dev/urandom >"$work/l2/data/part-2"
  local tarflags=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)
  tar "${tarflags[@]}" -C "$work/l1" -cf "$work/layer1.tar" .
  tar "${tarflags[@]}" -C "$work/l2" -cf "$work/layer2.tar" .
  local s1 s2
  s1="$(size_of "$work/layer1.tar")"
  s2="$(size_of "$work/layer2.tar")"
  l1="$(put_blob "$layout" "$work/layer1.tar")"
  l2="$(put_blob "$layout" "$work/layer2.tar")"
  cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$l1","sha256:$l2"]},"history":[{"created_by":"devcluster demo: layer 1"},{"created_by":"devcluster demo: layer 2"}]}
JSON
  local cs
  cs="$(size_of "$work/config.json")"
  cfg="$(put_blob "$layout" "$work/config.json")"
  cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cfg","size":$cs},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$l1","size":$s1},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$l2","size":$s2}]}
JSON
  local ms
  ms="$(size_of "$work/manifest.json")"
  man="$(put_blob "$layout" "$work/manifest.json")"
  cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$man","size":$ms,"annotations":{"org.opencontainers.image.ref.name":"$DEMO_TAG"}}]}
JSON
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  rm -rf "$work"
  DEMO_BLOBS=("$cfg" "$l1" "$l2")
  DEMO_MANIFEST="$man"
  DEMO_BYTES=$((s1 + s2 + cs))
}

# Pushes the layout's blobs and manifest with plain HTTP requests (for hosts without skopeo).
push_with_curl() {
  local layout="$1" base="http://$HOST:$PROXY_PORT" hex location sep login
  # The login goes in a curl config file, so that the password is in no process list.
  login="$DEMO_TMP/curl-login"
  (
    umask 077
    printf 'user = "%s:%s"\n' "$PROXY_USER" "$(head -n 1 "$(secret_of proxy-password)")" >"$login"
  )
  for hex in "${DEMO_BLOBS[@]}"; do
    location="$(curl -fsS -K "$login" -X POST -D - -o /dev/null "$base/v2/$DEMO_REPO/blobs/uploads/" |
      tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')"
    [ -n "$location" ] || die "the proxy gave no upload location"
    case "$location" in /*) location="$base$location" ;; esac
    case "$location" in *\?*) sep='&' ;; *) sep='?' ;; esac
    curl -fsS -K "$login" -X PUT -H 'Content-Type: application/octet-stream' \
      --data-binary "@$layout/blobs/sha256/$hex" -o /dev/null \
      "$location${sep}digest=sha256:$hex" || die "uploading blob sha256:$hex failed"
  done
  curl -fsS -K "$login" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$layout/blobs/sha256/$DEMO_MANIFEST" -o /dev/null \
    "$base/v2/$DEMO_REPO/manifests/$DEMO_TAG" || die "putting the manifest failed"
}

# Pulls the image from the registry on port $1 into directory $2 with plain HTTP requests,
# checking every blob's digest.
pull_with_curl() {
  local base="http://$HOST:$1" out="$2" hex
  mkdir -p "$out"
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -o "$out/manifest.json" "$base/v2/$DEMO_REPO/manifests/$DEMO_TAG" || return 1
  [ "$(sha256_of "$out/manifest.json")" = "$DEMO_MANIFEST" ] || return 1
  for hex in "${DEMO_BLOBS[@]}"; do
    curl -fsS -o "$out/$hex" "$base/v2/$DEMO_REPO/blobs/sha256:$hex" || return 1
    [ "$(sha256_of "$out/$hex")" = "$hex" ] || return 1
  done
}

# Sum of an agent's counter samples named $2 whose labels contain $3.
agent_metric() { metric_at "$HOST:$(agent_port "$1")" "$2" "$3"; }

# Sum over the origins of their samples named $1 whose labels contain $2.
origins_metric() {
  local i sum=0
  for ((i = 0; i < ORIGINS; i++)); do
    sum=$((sum + $(metric_at "$HOST:$((ORIGIN_HTTP_BASE + i))" "$1" "$2")))
  done
  echo "$sum"
}

# Sum of the samples named $2 whose labels contain $3 in the /metrics of address $1.
metric_at() {
  curl -fsS --max-time 5 "http://$1/metrics" 2>/dev/null |
    awk -v name="$2" -v label="$3" '
      $1 ~ ("^" name "([{]|$)") && index($1, label) { sum += $NF }
      END { printf "%.0f\n", sum + 0 }'
}

# Stops the demo's pulls still running, each with its whole process group.
stop_jobs() {
  local p
  for p in "${DEMO_JOBS[@]+"${DEMO_JOBS[@]}"}"; do
    kill -TERM -- "-$p" 2>/dev/null || true
  done
  for p in "${DEMO_JOBS[@]+"${DEMO_JOBS[@]}"}"; do
    wait "$p" 2>/dev/null || true
  done
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%d%%", 100 * a / b; else printf "-" }'; }

cmd_demo() {
  local size=32 up_args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --size)
        if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 2 ]; then
          die "--size takes a whole number of MiB, at least 2"
        fi
        size="$2"
        shift 2
        ;;
      --agents | --rate)
        [ $# -ge 2 ] || die "$1 needs a value"
        up_args+=("$1" "$2")
        shift 2
        ;;
      *) die "demo: unknown argument '$1' (demo [--agents N] [--rate BYTES_PER_S] [--size MIB])" ;;
    esac
  done
  if [ -z "$(running_names)" ]; then
    cmd_up "${up_args[@]+"${up_args[@]}"}"
  elif [ ${#up_args[@]} -gt 0 ]; then
    say "a cluster already runs from $DIR: using it as it is (down first to change its shape)"
  fi
  load_state || die "no cluster state in $DIR"
  local agents="$AGENTS" i name
  [ "$agents" -gt 0 ] || die "the cluster has no agents to pull through (up --agents N)"
  for ((i = 1; i <= agents; i++)); do
    live_pid "agent-$i" >/dev/null || die "agent-$i is not running: '$0 status' tells more"
  done
  live_pid proxy >/dev/null || die "the proxy is not running: '$0 status' tells more"

  local tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/shoal-demo.XXXXXX")"
  DEMO_TMP="$tmp"
  DEMO_JOBS=()
  # shellcheck disable=SC2154 # status is assigned inside the trap
  trap 'status=$?; trap - EXIT INT TERM
        stop_jobs; rm -rf "$DEMO_TMP"; exit $status' EXIT
  trap 'exit 130' INT TERM

  local use_skopeo=0
  case "${SHOAL_DEMO_CLIENT:-auto}" in
    auto) command -v skopeo >/dev/null 2>&1 && use_skopeo=1 ;;
    skopeo) use_skopeo=1 ;;
    curl) ;;
    *) die "SHOAL_DEMO_CLIENT must be auto, skopeo or curl, not '$SHOAL_DEMO_CLIENT'" ;;
  esac

  say "building a ${size} MiB two-layer image locally (no registry is asked for anything)"
  build_demo_image "$tmp/image" "$size"
  local ref="$DEMO_REPO:$DEMO_TAG"
  say "pushing $ref through the proxy (127.0.0.1:$PROXY_PORT)$([ $use_skopeo = 1 ] && echo ' with skopeo' || echo ' with curl')"
  local t0 t1
  t0="$(date +%s%N)"
  if [ "$use_skopeo" = 1 ]; then
    skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
      --dest-creds "$PROXY_USER:$(head -n 1 "$(secret_of proxy-password)")" \
      "oci:$tmp/image:$DEMO_TAG" "docker://$HOST:$PROXY_PORT/$ref" >"$tmp/push.log" 2>&1 || {
      cat "$tmp/push.log" >&2
      die "the push through the proxy failed (proxy log: $(log_of proxy))"
    }
  else
    push_with_curl "$tmp/image"
  fi
  t1="$(date +%s%N)"
  say "pushed $(mib "$DEMO_BYTES") in $(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.2f s", n / 1e9 }')"

  local peer0=() origin0=()
  for ((i = 1; i <= agents; i++)); do
    peer0[i]="$(agent_metric "$i" shoal_agent_peer_bytes_received_total 'source="peer"')"
    origin0[i]="$(agent_metric "$i" shoal_agent_peer_bytes_received_total 'source="origin"')"
  done
  local seeded0
  seeded0="$(origins_metric shoal_origin_sent_bytes_total 'proto="peer"')"

  say "pulling $ref through all $agents agents at once"
  # Each pull runs in a process group of its own (set -m), so that a timeout or Ctrl-C
  # stops the pull's client too, not only the subshell that waits for it.
  set -m
  for ((i = 1; i <= agents; i++)); do
    (
      s="$(date +%s%N)"
      if [ "$use_skopeo" = 1 ]; then
        skopeo --insecure-policy copy --quiet --src-tls-verify=false \
          "docker://$HOST:$(agent_port "$i")/$ref" "dir:$tmp/pull-$i" >"$tmp/pull-$i.log" 2>&1 &&
          rc=0 || rc=$?
      else
        pull_with_curl "$(agent_port "$i")" "$tmp/pull-$i" >"$tmp/pull-$i.log" 2>&1 &&
          rc=0 || rc=$?
      fi
      e="$(date +%s%N)"
      echo "$rc $((e - s))" >"$tmp/pull-$i.result"
    ) &
    DEMO_JOBS+=($!)
  done
  set +m
  local deadline=$(($(date +%s) + DEMO_TIMEOUT)) p running
  while :; do
    running=0
    for p in "${DEMO_JOBS[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
    [ "$running" = 1 ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "pulls still running after ${DEMO_TIMEOUT}s: stopping them"
      stop_jobs
      break
    fi
    sleep 0.2
  done
  for p in "${DEMO_JOBS[@]}"; do wait "$p" 2>/dev/null || true; done
  DEMO_JOBS=()

  local failed=0 rc ns hex total_peer=0 total_origin=0 dp dorig
  echo
  printf '  %-8s %9s %11s %20s %20s\n' agent time image "from peers" "from origins"
  for ((i = 1; i <= agents; i++)); do
    if [ ! -f "$tmp/pull-$i.result" ]; then
      printf '  %-8s did not finish within %ss\n' "agent-$i" "$DEMO_TIMEOUT"
      failed=1
      continue
    fi
    read -r rc ns <"$tmp/pull-$i.result"
    if [ "$rc" != 0 ]; then
      printf '  %-8s failed: %s\n' "agent-$i" "$(tail -n 3 "$tmp/pull-$i.log" | tr '\n' ' ')"
      failed=1
      continue
    fi
    for hex in "${DEMO_BLOBS[@]}"; do
      if [ -f "$tmp/pull-$i/$hex" ] && [ "$(sha256_of "$tmp/pull-$i/$hex")" != "$hex" ]; then
        printf '  %-8s returned a blob whose content is not sha256:%s\n' "agent-$i" "$hex"
        failed=1
      fi
    done
    dp=$(($(agent_metric "$i" shoal_agent_peer_bytes_received_total 'source="peer"') - peer0[i]))
    dorig=$(($(agent_metric "$i" shoal_agent_peer_bytes_received_total 'source="origin"') - origin0[i]))
    total_peer=$((total_peer + dp))
    total_origin=$((total_origin + dorig))
    printf '  %-8s %7s s %11s %11s (%4s) %11s (%4s)\n' "agent-$i" \
      "$(awk -v n="$ns" 'BEGIN { printf "%.2f", n / 1e9 }')" "$(mib "$DEMO_BYTES")" \
      "$(mib "$dp")" "$(pct "$dp" $((dp + dorig)))" "$(mib "$dorig")" "$(pct "$dorig" $((dp + dorig)))"
  done
  printf '  %-8s %9s %11s %11s (%4s) %11s (%4s)\n' all "" "" "$(mib "$total_peer")" \
    "$(pct "$total_peer" $((total_peer + total_origin)))" "$(mib "$total_origin")" \
    "$(pct "$total_origin" $((total_peer + total_origin)))"
  local seeded
  seeded=$(($(origins_metric shoal_origin_sent_bytes_total 'proto="peer"') - seeded0))
  printf '  the origins sent %s over the peer protocol: %s times the image\n' "$(mib "$seeded")" \
    "$(awk -v a="$seeded" -v b="$DEMO_BYTES" 'BEGIN { printf "%.2f", a / b }')"
  echo
  [ "$failed" = 0 ] || die "the image did not arrive at every agent (logs in $DIR/logs/)"
  say "every agent has $ref; $(pct "$total_peer" $((total_peer + total_origin))) of the layer bytes came from peers"
  say "try it: docker pull localhost:$(agent_port 1)/$ref   (or skopeo inspect --tls-verify=false docker://localhost:$(agent_port 1)/$ref)"
}

main() {
  [ $# -gt 0 ] || {
    usage
    exit 2
  }
  local cmd="$1"
  shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    demo) cmd_demo "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
