#!/usr/bin/env bash
# throughput.sh
#   tug's server throughput beside the physical floor of landing commits, in one run on one machine
#   over smart HTTP on 127.0.0.1:
#     floor — one bare `git push` of B commits prepared with `git fast-import` (B = 1, 64, 256;
#             median of 3 pushes each); commits/s = B / push time.
#     tug   — a fresh `tug server`: closed loops of 1, 64 and 256 clients, open loops offering 250,
#             500 and 1000 requests/s, and an overload run offering 4 × the 256-client rate for
#             60 s; requests, ok, refusals (429/503), acknowledged req/s, p50/p99, commits per push
#             and peak RSS per row, then every acknowledged job looked up by its Tug-Request trailer.
#   Prints one table, the ratios to the floor and PASS/MISS per target. Builds `tug` and
#   `tug-bench` in release mode and makes the fixture when missing.
#
#   Environment:
#     TUG_BENCH_DATA       where fixtures and results live (default /tmp/tug-bench)
#     TUG_BENCH_FIXTURES   directory of the fixtures (default $TUG_BENCH_DATA/fixtures)
#     TUG_BENCH_FIXTURE    fixture to run on (default large; `small` for a quick check)
#     TUG_BENCH_ARGS       extra arguments for `tug-bench throughput`, e.g. for a quick run on the
#                          small fixture: --requests-per-client 4 --open-seconds 2 --overload-seconds 3
#     CARGO_TARGET_DIR     cargo's target directory (default: the workspace's target/)
#   Needs: git, python3, nginx (nginx-light) and fcgiwrap; `ulimit -n` well above the server's
#   limits.max_waiting_streams (768 here): the overload run holds that many connections open.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DATA=${TUG_BENCH_DATA:-/tmp/tug-bench}
FIXTURES=${TUG_BENCH_FIXTURES:-$DATA/fixtures}
FIXTURE=${TUG_BENCH_FIXTURE:-large}
mkdir -p "$FIXTURES" "$DATA/results"

cargo build --quiet --release -p tug -p tug-bench --manifest-path "$ROOT/Cargo.toml"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/tug-bench
TUG=$TARGET/release/tug

if [ ! -f "$FIXTURES/$FIXTURE.git/HEAD" ]; then
  echo "fixture $FIXTURE: generating (about a minute for large)" >&2
  rm -rf "$FIXTURES/.$FIXTURE.git.tmp"
  "$BENCH_DIR/make-fixture.sh" "$FIXTURE" "$FIXTURES/.$FIXTURE.git.tmp" >&2
  mv "$FIXTURES/.$FIXTURE.git.tmp" "$FIXTURES/$FIXTURE.git"
fi

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg); ulimit -n $(ulimit -n)" >&2
# shellcheck disable=SC2086
"$BIN" throughput --fixtures "$FIXTURES" --fixture "$FIXTURE" --tug "$TUG" \
  --log "$DATA/results/throughput-tug.log" ${TUG_BENCH_ARGS:-}
