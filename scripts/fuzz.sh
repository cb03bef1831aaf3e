#!/usr/bin/env bash
# Smoke-runs the cargo-fuzz targets of fuzz/ (nightly, libFuzzer), each for a short time.
#
#   scripts/fuzz.sh [TARGET...]
#
# Without arguments every target runs. FUZZ_SECONDS (default 20) is each target's time.
# Each target starts from its committed seeds (fuzz/seeds/TARGET) and its committed
# reproducers of earlier findings (fuzz/regressions/TARGET, replayed first); new corpus
# entries and crash inputs go under target/fuzz/, never into the source tree. Installs what it
# needs: the nightly toolchain and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-20}
all_targets=(runtime_log chat_template mock_model_file stream_text reply_parsers hf_template)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cd fuzz
cargo +nightly fuzz build -O

failed=()
for t in "${targets[@]}"; do
  work="$root/target/fuzz/corpus/$t"
  artifacts="$root/target/fuzz/artifacts/$t/"
  mkdir -p "$work" "$artifacts"
  corpora=("$work")
  [ -d "$root/fuzz/seeds/$t" ] && corpora+=("$root/fuzz/seeds/$t")
  [ -d "$root/fuzz/regressions/$t" ] && corpora+=("$root/fuzz/regressions/$t")
  printf '\n---- fuzz %s (%ss) ----\n' "$t" "$seconds"
  start=$(date +%s)
  # -close_fd_mask=1: the mock runtime's log lines on stdout are noise here; libFuzzer's own
  # report and panic messages go to stderr and stay.
  if cargo +nightly fuzz run -O "$t" "${corpora[@]}" -- \
      -max_total_time="$seconds" -close_fd_mask=1 -print_final_stats=1 \
      -artifact_prefix="$artifacts" >"$root/target/fuzz/$t.log" 2>&1; then
    echo "fuzz $t: ok, $(grep -E 'stat::number_of_executed_units' "$root/target/fuzz/$t.log" | awk '{print $2}') runs in $(( $(date +%s) - start ))s"
  else
    echo "fuzz $t: FAILED after $(( $(date +%s) - start ))s; log: target/fuzz/$t.log"
    grep -E 'panicked at|^thread|SUMMARY|Test unit written|assertion' "$root/target/fuzz/$t.log" | head -n 12 || true
    failed+=("$t")
  fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran without a finding"
