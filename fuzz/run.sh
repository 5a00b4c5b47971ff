#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another,
# with libFuzzer through cargo-fuzz. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Crashes are saved under fuzz/artifacts/TARGET/; the corpus grows under
# fuzz/corpus/TARGET/ (not committed), starting from fuzz/seeds/TARGET/.
# Exits non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: SECONDS must be a positive whole number, got '$seconds'" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }
rustup toolchain list | grep -q '^nightly' || { echo "run.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_head response_head chunked cli_token authority)
fi
for target in "${targets[@]}"; do
  echo "== $target ($seconds s)"
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY|Done)' || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "run.sh: $target found a crash: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "run.sh: no crash in ${#targets[@]} target(s), $seconds s each"
