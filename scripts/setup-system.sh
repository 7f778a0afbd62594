#!/usr/bin/env bash
# Install the Debian packages the build needs (OpenBLAS/LAPACK for the CPU backend, fontconfig
# and DejaVu fonts for plots, unzip for the asset fetch), plus any packages named as arguments
# (scripts/slurm-up.sh passes slurm-wlm and munge). No-op when they are already present.
set -euo pipefail
PKGS=(libopenblas-dev liblapack-dev libfontconfig1-dev fonts-dejavu-core pkg-config unzip "$@")
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
