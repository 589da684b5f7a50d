#!/usr/bin/env bash
# Runs every fuzz target of the edit engine for SECONDS each (default 60), PARALLEL at a time
# (default 1), seeded from the edit cases, and prints the executions per target and in total.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# A finding stops with a non-zero exit; its input is in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh 300            # five minutes per target, one after the other
#   PARALLEL=2 fuzz/run.sh 300
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
parallel=${PARALLEL:-1}
targets=(kustomize_image manifest_image yq_set helm_image redeploy)
if [ -n "${TARGETS:-}" ]; then read -r -a targets <<< "$TARGETS"; fi

./seed.sh
# No sanitizer (the engine has no unsafe code) but overflow checks and debug assertions on.
(cd .. && cargo +nightly fuzz build --fuzz-dir fuzz -s none -a)
bin_dir=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release
mkdir -p logs

run() {
  local t=$1
  mkdir -p "artifacts/$t"
  "$bin_dir/$t" "corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" > "logs/$t.log" 2>&1
}

status=0
pids=()
names=()
for t in "${targets[@]}"; do
  run "$t" & pids+=($!); names+=("$t")
  if [ "${#pids[@]}" -ge "$parallel" ]; then
    wait "${pids[0]}" || { echo "FINDING in ${names[0]}: see fuzz/logs/${names[0]}.log"; status=1; }
    pids=("${pids[@]:1}"); names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "FINDING in ${names[$i]}: see fuzz/logs/${names[$i]}.log"; status=1; }
done

total=0
for t in "${targets[@]}"; do
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -n 1)
  execs=${execs:-0}
  total=$((total + execs))
  printf '%-16s %12s execs\n' "$t" "$execs"
done
printf '%-16s %12s execs\n' total "$total"
exit "$status"
