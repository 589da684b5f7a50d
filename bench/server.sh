#!/usr/bin/env bash
# server.sh [server|releases|replicas|all]
#   The server benchmarks on the large fixture over smart HTTP on 127.0.0.1:
#     server   — 8 naive git writers on one branch against a real `tug server` with 1, 8 and 64
#                concurrent deploy clients, and one request at a time against a bare `git push`.
#     releases — `GET /api/v1/status/{service}` with 2,000 services × 3 environments, and a
#                promotion from request to push against a bare `git push`.
#     replicas — SQLite against PostgreSQL (one replica, one branch), one replica against three
#                on PostgreSQL across 100 branches, and a chaos run (3 replicas, 10,000
#                requests, the hot branch's writer killed every 10 s, the git server restarted
#                once, a person pushing to the hot branch every 100 ms): lost, duplicated,
#                failover, and as its floor a plain git writer landing on the same contended
#                branch (`--human-every-ms 0`: no person, no plain writer).
#                Not part of `all`; needs PostgreSQL's server programs (apt-get install postgresql).
#   Builds `tug` and `tug-bench` in release mode, makes the large fixture when missing, and prints
#   the tables.
#
#   Environment:
#     TUG_BENCH_DATA       where fixtures and results live (default /tmp/tug-bench)
#     TUG_BENCH_ARGS       extra arguments for `tug-bench server` or `tug-bench replicas`
#     CARGO_TARGET_DIR     cargo's target directory (default: the workspace's target/)
#   Needs: git, python3, nginx (nginx-light) and fcgiwrap.
set -euo pipefail
WHAT=${1:-all}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DATA=${TUG_BENCH_DATA:-/tmp/tug-bench}
FIXTURES=$DATA/fixtures
mkdir -p "$FIXTURES" "$DATA/results"

cargo build --quiet --release -p tug -p tug-bench --manifest-path "$ROOT/Cargo.toml"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/tug-bench
TUG=$TARGET/release/tug

if [ ! -f "$FIXTURES/large.git/HEAD" ]; then
  echo "fixture large: generating (about a minute)" >&2
  rm -rf "$FIXTURES/.large.git.tmp"
  "$BENCH_DIR/make-fixture.sh" large "$FIXTURES/.large.git.tmp" >&2
  mv "$FIXTURES/.large.git.tmp" "$FIXTURES/large.git"
fi

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "$WHAT" = server ] || [ "$WHAT" = all ]; then
  # shellcheck disable=SC2086
  "$BIN" server --fixtures "$FIXTURES" --fixture large --tug "$TUG" \
    --log "$DATA/results/server-tug.log" ${TUG_BENCH_ARGS:-}
fi
if [ "$WHAT" = releases ] || [ "$WHAT" = all ]; then
  echo
  "$BIN" releases --fixtures "$FIXTURES" --fixture large --tug "$TUG"
fi
if [ "$WHAT" = replicas ]; then
  # shellcheck disable=SC2086
  "$BIN" replicas --fixtures "$FIXTURES" --fixture large --tug "$TUG" ${TUG_BENCH_ARGS:-}
fi
