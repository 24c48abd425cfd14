#!/usr/bin/env bash
# Installs what the repository needs on a Debian/Ubuntu controller: the lab's Debian
# packages and the Python toolchain in .venv (Ansible, Molecule, linters, the app).
# `setup.sh ml` adds the model-building stack (the app's `export` extra: Ultralytics,
# torch, onnx; about 3 GB), which only training and the parity tests need.
# Safe to run again: it only does what is missing or what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# restic and rclone: tests/backup runs the backup script against a real append-only server.
LAB_PACKAGES=(debootstrap systemd-container iptables iproute2 openssh-client python3-venv util-linux
  restic rclone openssl procps)
missing=()
for pkg in "${LAB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run 'sudo make setup' (or: sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# promtool, for the alert rules' tests, from Debian's prometheus package: unpacked into
# .cache (the Makefile puts it on PATH), not installed, so no Prometheus server starts here.
if [[ ! -x .cache/prometheus/usr/bin/promtool ]]; then
  echo "setup: unpacking promtool from Debian's prometheus package into .cache/prometheus"
  mkdir -p .cache/debs
  (cd .cache/debs && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; })
  dpkg-deb -x "$(ls -t .cache/debs/prometheus_*.deb | head -n 1)" .cache/prometheus
fi

PYTHON=${PYTHON:-python3}
what=${1:-controller}
case $what in
  controller) app='app' ;;
  ml) app='app[export]' ;;
  *) echo "setup: unknown part '$what' (use: controller, ml)" >&2; exit 2 ;;
esac
stamp_key=$(cat requirements.txt app/pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.setup-$what-$stamp_key
if [[ -f $stamp ]]; then
  echo "setup: .venv is up to date ($what)"
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
echo "setup: installing the Python toolchain ($what) into .venv (first time: minutes)"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -e "$app"
rm -f .venv/.setup-"$what"-*
touch "$stamp"
echo "setup: done ($what)"
