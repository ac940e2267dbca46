#!/usr/bin/env bash
# Installs the programs and Python packages the system tests drive (`./test.sh` runs them
# with the `system-tests` features), if they are missing. Safe to run again: it installs
# nothing that is already there.
set -euo pipefail

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
need() { command -v "$1" >/dev/null 2>&1 || apt_packages+=("$2"); }
need dockerd docker.io
need containerd containerd
need skopeo skopeo
need podman podman
need docker-registry docker-registry
need ip iproute2
need jq jq
need systemd-analyze systemd
need gcc gcc
# The chart test checks the generated metainfo key against its certificate.
need openssl openssl
# The end-to-end image holds a program linked with `gcc -static`, which needs libc.a.
dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q "ok installed" || apt_packages+=(libc6-dev)

if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "== installing ${apt_packages[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
fi

py_missing=()
python3 -c 'import oras' 2>/dev/null || py_missing+=(oras)
python3 -c 'import kubernetes_validate' 2>/dev/null || py_missing+=(kubernetes-validate)
python3 -c 'import helm_python' 2>/dev/null || py_missing+=(helm-python-sdk)
python3 -c 'import yaml' 2>/dev/null || py_missing+=(PyYAML)
if [ ${#py_missing[@]} -gt 0 ]; then
  echo "== pip install ${py_missing[*]}"
  python3 -m pip install -q "${py_missing[@]}"
fi
