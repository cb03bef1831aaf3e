#!/usr/bin/env bash
# Regenerate rkllm-sys/src/bindings.rs from rkllm-sys/include/rkllm.h with bindgen.
#   scripts/regen-bindings.sh          rewrite the committed file
#   scripts/regen-bindings.sh --check  fail if the committed file differs from a fresh generation
# Needs libclang (Debian: libclang-dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
committed="$root/rkllm-sys/src/bindings.rs"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
unset RKLLM_VENDOR_HEADER
# A separate target directory keeps the bindgen build out of the normal one.
RKLLM_SYS_BINDINGS_OUT="$out" CARGO_TARGET_DIR="$root/target/regen-bindings" \
  cargo check --quiet --manifest-path "$root/Cargo.toml" -p rkllm-sys --features bindgen
if [ "${1:-}" = "--check" ]; then
  if diff -u "$committed" "$out"; then
    echo "bindings: committed rkllm-sys/src/bindings.rs matches a fresh bindgen run"
  else
    echo "bindings: rkllm-sys/src/bindings.rs is out of date; run scripts/regen-bindings.sh" >&2
    exit 1
  fi
else
  cp "$out" "$committed"
  echo "bindings: wrote $committed"
fi
