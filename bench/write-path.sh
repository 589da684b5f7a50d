#!/usr/bin/env bash
# write-path.sh [N=30]
#   The write-path benchmark: per image-tag bump, a bare `git push` (the floor), the naive
#   fetch/reset/sed/add/commit/push pipeline and tug's land, side by side over smart HTTP on
#   127.0.0.1, on the small and the large fixture; then the edit engine's rate on one thread.
#   Builds tug-bench in release mode, makes the fixtures when missing, and prints the table.
#
#   Environment:
#     TUG_BENCH_DATA       where fixtures and raw timings live (default /tmp/tug-bench)
#     TUG_BENCH_SIZES      fixtures to run, smallest first (default small,large)
#     TUG_BENCH_REUSE      a directory of already-made fixtures (<size>.git) to copy instead of
#                          generating, used when it holds the expected history (default: none)
#     CARGO_TARGET_DIR     cargo's target directory (default: the workspace's target/)
#   Needs: git, python3, nginx (nginx-light) and fcgiwrap.
set -euo pipefail
N=${1:-30}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DATA=${TUG_BENCH_DATA:-/tmp/tug-bench}
FIXTURES=$DATA/fixtures
SIZES=${TUG_BENCH_SIZES:-small,large}
REUSE=${TUG_BENCH_REUSE:-}
mkdir -p "$FIXTURES" "$DATA/results"

cargo build --quiet --release -p tug-bench --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tug-bench

expected_commits() {
  case $1 in small) echo 300 ;; large) echo 20000 ;; *:*) echo "${1##*:}" ;; *) echo "" ;; esac
}

# A fixture counts as made once its directory exists under its final name: it is built (or
# copied) under a temporary name and renamed at the end, so an interrupted run leaves no half.
for size in ${SIZES//,/ }; do
  dest=$FIXTURES/$size.git
  [ -f "$dest/HEAD" ] && continue
  tmp=$FIXTURES/.$size.git.tmp
  rm -rf "$tmp"
  want=$(expected_commits "$size")
  if [ -n "$want" ] && [ -n "$REUSE" ] && [ -f "$REUSE/$size.git/HEAD" ] &&
     [ "$(git --git-dir "$REUSE/$size.git" rev-list --count main 2>/dev/null)" = "$want" ]; then
    echo "fixture $size: copying $REUSE/$size.git" >&2
    cp -a "$REUSE/$size.git" "$tmp"
  else
    echo "fixture $size: generating (the large one takes about a minute)" >&2
    "$BENCH_DIR/make-fixture.sh" "$size" "$tmp" >&2
  fi
  mv "$tmp" "$dest"
done

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$BIN" write-path --fixtures "$FIXTURES" --sizes "$SIZES" --requests "$N" --raw "$DATA/results"
