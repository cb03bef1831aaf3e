#!/usr/bin/env bash
# The crates as crates.io users and docs.rs get them:
#
# 1. `cargo publish --dry-run -p rkllm-sys -p rkllm`: packages both crates and builds each
#    from its `.crate` (default features). rkllm depends on rkllm-sys by version; the
#    multi-package dry run (cargo 1.90 or newer) resolves it from the freshly packaged
#    rkllm-sys, so nothing needs to be on crates.io yet. Needs the crates.io index.
# 2. Packages both again (`cargo package --no-verify`: the dry run keeps no `.crate` file),
#    unpacks both `.crate` files into a temporary directory (removed on exit) and, from there,
#    with the unpacked rkllm pointed at the unpacked rkllm-sys (`patch.crates-io`):
#    rkllm-sys `cargo test` and `cargo doc`; rkllm `cargo build` and `cargo doc` with the
#    docs.rs features (`package.metadata.docs.rs`, docs with RUSTDOCFLAGS="-D warnings"),
#    `cargo test --features mock`, and the README's doctests with the docs.rs features.
# 3. `cargo check` of every combination of the crates' features (64 of rkllm, 4 of
#    rkllm-sys). `bindgen` needs libclang: its combinations are checked when libclang is
#    installed (PACKAGE_CHECK_BINDGEN=yes forces them, =no leaves them out), else left out
#    with a notice.
#
# Builds share the workspace's target directory; the unpacked packages are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n---- package-check: %s (at %d s) ----\n' "$*" $((SECONDS - start)); }

target=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || { echo "package-check: no target_directory from cargo metadata" >&2; exit 1; }
export CARGO_TARGET_DIR="$target"

version_of() {
  cargo metadata --format-version 1 --no-deps |
    grep -o "\"name\":\"$1\",\"version\":\"[^\"]*\"" | sed 's/.*"version":"\(.*\)"/\1/'
}
sys_version=$(version_of rkllm-sys)
rkllm_version=$(version_of rkllm)

step "cargo publish --dry-run -p rkllm-sys -p rkllm"
# --allow-dirty: the check is about what the packages contain; a real publish happens from
# a clean checkout anyway.
cargo publish --dry-run --allow-dirty -p rkllm-sys -p rkllm
# The dry run leaves no .crate files behind: write them (checked above) for the steps below.
rm -f "$target/package/rkllm-sys-$sys_version.crate" "$target/package/rkllm-$rkllm_version.crate"
cargo package --no-verify --allow-dirty -p rkllm-sys -p rkllm

work=$(mktemp -d "${TMPDIR:-/tmp}/rkllm-package-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$target/package/rkllm-sys-$sys_version.crate" -C "$work"
tar -xzf "$target/package/rkllm-$rkllm_version.crate" -C "$work"
sys_dir="$work/rkllm-sys-$sys_version"
rkllm_dir="$work/rkllm-$rkllm_version"

for dir in "$sys_dir" "$rkllm_dir"; do
  for file in LICENSE-MIT LICENSE-APACHE README.md; do
    [ -s "$dir/$file" ] || { echo "package-check: $(basename "$dir") lacks $file" >&2; exit 1; }
  done
done

# rkllm ships the repository's README (its examples are doctests); a stale copy would test
# old examples.
cmp README.md "$rkllm_dir/README.md"

docs_rs_features() {
  (cd "$1" && cargo metadata --format-version 1 --no-deps --offline) |
    sed -n 's/.*"docs":{"rs":{[^}]*"features":\[\([^]]*\)\].*/\1/p' | tr -d '"'
}
features=$(docs_rs_features "$rkllm_dir")
[ -n "$features" ] || { echo "package-check: no docs.rs features in rkllm's manifest" >&2; exit 1; }
echo "docs.rs features of rkllm: $features"

step "rkllm-sys from its package: test, doc"
(cd "$sys_dir" && cargo test --locked && RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps)

# The unpacked rkllm takes rkllm-sys from the unpacked package, not from crates.io.
patch=(--config "patch.crates-io.rkllm-sys.path=\"$sys_dir\"")

step "rkllm from its package: build and doc with the docs.rs features ($features)"
# Not --locked: the packaged Cargo.lock pins rkllm-sys from crates.io, which the patch replaces.
(cd "$rkllm_dir" && cargo build "${patch[@]}" --features "$features" &&
  RUSTDOCFLAGS="-D warnings" cargo doc "${patch[@]}" --no-deps --features "$features")

step "rkllm from its package: cargo test --features mock"
(cd "$rkllm_dir" && cargo test "${patch[@]}" --features mock)

step "rkllm from its package: the README's doctests with the docs.rs features"
# Only `ReadmeDoctests` (the README shipped in the package): the workspace's test run covers
# everything else with these features.
(cd "$rkllm_dir" && cargo test "${patch[@]}" --features "$features" --doc -- ReadmeDoctests)

step "every feature combination: cargo check"
bindgen=${PACKAGE_CHECK_BINDGEN:-auto}
if [ "$bindgen" = auto ]; then
  if [ -n "${LIBCLANG_PATH:-}" ] || ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
    bindgen=yes
  else
    bindgen=no
  fi
fi
# Every subset of the words in $2, checked for package $1.
powerset() {
  local package=$1 all
  read -r -a all <<<"$2"
  local n=${#all[@]} mask i set count=0
  for ((mask = 0; mask < 1 << n; mask++)); do
    set=()
    for ((i = 0; i < n; i++)); do
      if ((mask >> i & 1)); then set+=("${all[i]}"); fi
    done
    local list
    list=$(IFS=,; echo "${set[*]}")
    echo "cargo check -p $package --no-default-features --features '$list'"
    cargo check --quiet -p "$package" --no-default-features --features "$list"
    count=$((count + 1))
  done
  echo "$package: $count feature combinations checked"
}
powerset rkllm "mock tokenizer probe async template link"
if [ "$bindgen" = yes ]; then
  powerset rkllm-sys "link bindgen"
else
  echo "!!!!! package-check: libclang not found; rkllm-sys's \`bindgen\` combinations are" \
       "NOT checked (PACKAGE_CHECK_BINDGEN=yes to force) !!!!!"
  powerset rkllm-sys "link"
fi

echo
echo "package-check: all passed in $((SECONDS - start)) s"
