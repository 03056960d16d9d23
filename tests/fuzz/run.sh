#!/usr/bin/env bash
# Builds the libFuzzer harnesses with the STABLE toolchain (no cargo-fuzz, no nightly: the
# SanitizerCoverage flags below are stable rustc -C flags; no sanitizer is enabled) and runs one.
#   tests/fuzz/run.sh build            build every target
#   tests/fuzz/run.sh TARGET SECONDS   fuzz TARGET (jsonlines record caddyfile caddy_admin catalog)
set -euo pipefail
cd "$(dirname "$0")"
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ "${1:-build}" = build ]; then
  exec cargo build --release --target "$triple" --bins
fi
t=$1 secs=${2:-600}
mkdir -p "corpus/$t" "artifacts/$t"
seeds=()
[ -d "seeds/$t" ] && seeds=("seeds/$t")
exec "target/$triple/release/$t" "corpus/$t" "${seeds[@]}" -max_total_time="$secs" \
  -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
