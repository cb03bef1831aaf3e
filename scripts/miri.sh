#!/usr/bin/env bash
# Miri (nightly) over the code around the crate's unsafe seams: rkllm's unit tests, the raw-ABI
# mock tests (rkllm/tests/mock_*.rs) and the safe-API streaming, abort and inputs tests.
# Fails on any undefined behaviour, data race, leak or test failure Miri reports.
#
#   scripts/miri.sh            the CI selection (the tests listed below as unable to run are
#                              skipped by name, and the script says how many)
#   MIRI_ALL=1 scripts/miri.sh also runs the tests listed as unable to run under Miri, to see
#                              whether they can be taken off the list
#
# Installs what it needs: the nightly toolchain with its miri and rust-src components.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add miri rust-src --toolchain nightly >/dev/null
cargo +nightly miri setup >/dev/null

# The tests read model files and temp directories, and the mock's timings use the real clock.
export MIRIFLAGS="-Zmiri-disable-isolation ${MIRIFLAGS:-}"

# Tests that cannot run under Miri today. Miri stops the whole test binary at the first
# operation it does not support, so these are skipped by exact name, each with the reason.
# Loading a model through the safe API runs the preflight (getrlimit) and the init log
# capture (fflush, fstat and non-blocking reads on pipes) unless the builder turns them off;
# Miri supports none of these calls yet.
CANNOT_RUN_LIB=(
  # getrlimit (the preflight of the model the test loads)
  ffi::callback::tests::a_panic_in_the_callback_never_reaches_c_and_is_reraised_on_the_consumer
  ffi::handle::tests::a_thread_spawn_failure_is_reported_as_such_and_leaves_the_model_usable
  # fflush
  diagnosis::capture::tests::captures_and_tees_both_streams
  diagnosis::capture::tests::concurrent_captures_serialise
  diagnosis::capture::tests::disabled_capture_calls_f_directly
  diagnosis::capture::tests::nested_captures_tee_into_the_outer_one
  # fstat on a pipe
  diagnosis::capture::tests::descriptors_restored_after_normal_run_and_panic
  # pushes megabytes through a pipe: still running after 11 minutes
  diagnosis::capture::tests::large_write_does_not_deadlock
  # statfs (the prefix store checks its directory is not a tmpfs when it opens)
  chat::prefix_store::behaviour::a_cache_is_never_used_across_a_model_runtime_or_template_change
  chat::prefix_store::behaviour::a_changed_or_truncated_file_is_refused_and_removed
  chat::prefix_store::behaviour::a_damaged_or_foreign_index_is_refused_and_its_files_deleted
  chat::prefix_store::behaviour::a_saved_system_prefix_is_found_for_a_longer_prompt
  chat::prefix_store::behaviour::a_stored_system_prefix_survives_a_restart
  chat::prefix_store::behaviour::a_tmpfs_directory_is_refused_unless_allowed
  chat::prefix_store::behaviour::an_abandoned_save_leaves_nothing_behind
  chat::prefix_store::behaviour::eviction_keeps_the_files_within_the_budget_least_recently_used_first
  chat::prefix_store::behaviour::the_longest_stored_prefix_wins
  # getrlimit, statfs
  chat::prefix_store::behaviour::with_the_mock::a_stored_system_prompt_is_loaded_by_the_runtime_after_a_restart
)
# Too slow under Miri for the time CI has, and safe code only (no unsafe, no threads): the
# ordinary test run covers it.
SLOW_LIB=(
  # 1.1 million code points
  chat::strip::tests::chat_strip_matches_python_isspace_on_every_code_point
  # every id of the built-in tokenizer's vocabulary: still running after 150 s
  mock::tokenizer::tests::every_id_is_in_gemmas_vocabulary_and_decodes_back
  # the reply parsers fed every 2- and 3-way split of dozens of replies, or hundreds of
  # random ones (pure string code, no unsafe, no threads)
  chat::reasoning::tests::every_split_matches_one_shot
  chat::reasoning::tests::content_is_never_delayed_beyond_a_tag_prefix
  chat::tool_calls::tests::every_split_matches_one_shot
  chat::tool_calls::tests::random_fragments
  chat::tool_calls::tests::lexer_agrees_with_serde_json
  chat::tool_calls::tests::tag_prefixes_are_held_only_as_long_as_needed
)
# The raw-ABI tests that read the runtime's log lines: the capture helper of
# rkllm/tests/mock_support reads its pipe with `File::read_to_end`, which seeks ("cannot seek
# on pipe"). Reading through `Read::take` gets past that, but then Miri reports a deadlock
# (the reader threads stay blocked in `read` after `dup2` has replaced the pipe's last write
# end).
CANNOT_RUN_MOCK=(
  # mock_cache_cost.rs
  damaged_truncated_and_foreign_files_are_refused
  # mock_cache_lora.rs
  another_models_cache_and_missing_files_are_refused
  lora_adapters_are_loaded_selected_and_checked
  # mock_failures.rs
  a_json_tokenizer_without_the_feature_fails_init_clearly
  a_run_can_return_an_error_without_callbacks
  a_second_model_can_be_refused
  an_old_driver_is_warned_about_before_the_version_line
  an_overlong_prompt_fails_truncates_or_errors_as_configured
  error_lines_can_go_to_stdout
  every_init_failure_prints_the_runtimes_lines_and_fails
  init_can_return_success_with_a_null_handle
  init_rejects_a_nonsensical_context_length
  init_rejects_missing_and_foreign_model_files
  init_rejects_null_pointers
  log_level_one_prints_the_performance_table
  # mock_runtime_log.rs (also: they load through the safe API, whose preflight and init
  # capture Miri cannot run)
  a_failed_init_still_explains_itself_when_the_lines_go_elsewhere
  by_default_the_lines_go_to_the_descriptors_as_the_runtimes_do
  nowhere_leaves_the_descriptors_and_the_log_alone_after_init
  to_the_log_facade_with_the_level_of_each_line
  # mock_memory.rs
  an_injected_failure_takes_no_memory
  models_without_a_size_never_touch_the_pool
  the_pool_size_comes_from_the_environment_at_each_init
  two_models_exhaust_the_pool_and_destroy_frees_it
)
# The safe-API tests of tests/streaming.rs and tests/inputs.rs all run (the init capture and
# the preflight take their cfg(miri) paths: descriptors and rlimits left alone, the mock's log
# lines handed to the capture directly); about 4.5 and 2.5 minutes on 2 cores. The abort tests
# also run under Miri (9 of 10 passed in a trial), but the file takes about 15 minutes, which
# CI cannot spend: they are skipped here for time, and ThreadSanitizer covers them.
CANNOT_RUN_SAFE_API=(
  # tests/abort.rs
  a_blocking_rkllm_abort_cannot_deadlock_with_a_full_channel
  a_leaked_stream_is_finished_by_the_next_run
  abort_from_another_thread_mid_stream
  dropping_everything_with_a_leaked_stream_joins_then_destroys
  dropping_the_stream_mid_run_aborts_it_and_the_next_run_waits_for_it
  every_abort_ending_of_the_runtime_gives_aborted
  is_running_is_reported_the_right_way_round
  one_session_per_model
  running_sense_follows_the_setting
  stop_aborts_the_run_and_waits_for_the_runtime
  thread_safety_is_what_the_types_promise
)

# Tests that leak on purpose (`mem::forget` of a stream, to check what the crate does when a
# user does that). Miri's leak check would fail them for the leak they are about, so they run
# on their own with -Zmiri-ignore-leaks; every other test keeps the leak check.
LEAKING=(
  dropping_everything_with_a_leaked_stream_joins_then_destroys
  a_leaked_stream_is_finished_by_the_next_run
  a_blocking_rkllm_abort_cannot_deadlock_with_a_full_channel
)

passed=0
skipped=0
# miri_test LABEL "CARGO SELECTION" [SKIP...]: runs one test binary, skipping SKIP by exact
# name (names that are not in that binary are ignored); counts what passed and was skipped.
miri_test() {
  local label=$1 selection=$2
  shift 2
  local args=(--exact)
  for t in "$@"; do args+=(--skip "$t"); done
  printf -- '-- miri: %s\n' "$label"
  local log status=0 start=$SECONDS
  log=$(mktemp)
  # shellcheck disable=SC2086 # the selection is several words on purpose
  cargo +nightly miri test -q $selection -- "${args[@]}" >"$log" 2>&1 || status=$?
  grep -E '^test result' "$log" | sed "s/\$/ ($((SECONDS - start)) s)/" || true
  passed=$((passed + $(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')))
  if [ -z "${NOT_SKIPPED:-}" ]; then
    skipped=$((skipped + $(grep -Eo '[0-9]+ filtered out' "$log" | awk '{s += $1} END {print s + 0}')))
  fi
  if [ "$status" -ne 0 ]; then
    tail -n 80 "$log"
    rm -f "$log"
    echo "miri: $label FAILED (exit status $status)"
    exit 1
  fi
  rm -f "$log"
}

# Prints its arguments one a line, unless MIRI_ALL is set.
unless_all() { [ -n "${MIRI_ALL:-}" ] || [ $# -eq 0 ] || printf '%s\n' "$@"; }
lines() { [ $# -eq 0 ] || printf '%s\n' "$@"; }

mapfile -t skip < <(unless_all "${CANNOT_RUN_LIB[@]}"; lines "${SLOW_LIB[@]}")
miri_test "rkllm unit tests" "-p rkllm --features mock --lib" "${skip[@]}"

for file in rkllm/tests/mock_*.rs; do
  name=$(basename "$file" .rs)
  mapfile -t skip < <(unless_all "${CANNOT_RUN_MOCK[@]}")
  miri_test "$name" "-p rkllm --features mock --test $name" "${skip[@]}"
done

safe_api="-p rkllm-workspace --no-default-features --features mock"
for name in streaming inputs; do
  mapfile -t skip < <(unless_all "${CANNOT_RUN_SAFE_API[@]}")
  miri_test "tests/$name.rs" "$safe_api --test $name" "${skip[@]}"
done
# The leaking tests are skipped here and run apart below.
mapfile -t skip < <(unless_all "${CANNOT_RUN_SAFE_API[@]}"; lines "${LEAKING[@]}")
miri_test "tests/abort.rs" "$safe_api --test abort" "${skip[@]}"
for t in "${LEAKING[@]}"; do
  if [ -z "${MIRI_ALL:-}" ] && lines "${CANNOT_RUN_SAFE_API[@]}" | grep -qx "$t"; then
    continue # already counted as skipped above
  fi
  skipped=$((skipped - 1))
  # Filtering one test out of the file is not skipping the others: they ran above.
  NOT_SKIPPED=1 MIRIFLAGS="$MIRIFLAGS -Zmiri-ignore-leaks" \
    miri_test "tests/abort.rs $t (leaks on purpose: -Zmiri-ignore-leaks)" "$safe_api --test abort $t"
done

echo "(tests skipped by name are listed in scripts/miri.sh with the reason)"
echo "miri: $passed passed, 0 failed, $skipped skipped"
