#!/usr/bin/env bash
# ThreadSanitizer over the threaded safe-API tests: streaming, abort, soak and run safety
# (late callbacks, bounded stops), on the mock runtime. The standard library is rebuilt with the sanitizer (-Zbuild-std), so races inside
# std's channels and threads are seen too. Fails on any ThreadSanitizer warning or test failure.
#
#   scripts/tsan.sh [extra cargo test arguments, e.g. -- --skip NAME]
#
# Installs what it needs: the nightly toolchain and its rust-src component. Builds into
# target/tsan so the ordinary builds are not invalidated.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add rust-src --toolchain nightly >/dev/null

target=x86_64-unknown-linux-gnu
export RUSTFLAGS="-Zsanitizer=thread"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR=target/tsan
# halt_on_error=0: report every race, not only the first; the count decides.
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
mkdir -p "$CARGO_TARGET_DIR"
log="$CARGO_TARGET_DIR/tsan.log"

set +e
cargo +nightly test -Zbuild-std --target "$target" \
  -p rkllm-workspace --no-default-features --features mock \
  --test streaming --test abort --test soak --test run_safety "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

warnings=$(grep -c '^WARNING: ThreadSanitizer' "$log" || true)
echo "tsan: $warnings ThreadSanitizer warning(s); cargo test exit status $status"
if [ "$warnings" -ne 0 ]; then
  grep -A12 '^WARNING: ThreadSanitizer' "$log" | head -n 60
  exit 1
fi
exit "$status"
