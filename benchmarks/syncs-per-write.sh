#!/usr/bin/env bash
# Counts the fdatasync/fsync calls each node of a 3-node httpraft cluster makes per write,
# with one client writing sequentially (the case where nothing can be batched). Counted from
# outside with strace, so any build can be measured, old or new.
#
# Usage: benchmarks/syncs-per-write.sh [BIN_DIR ...]
#   BIN_DIR: a directory holding httpraft and raft-bench (default: target/release, built
#   first). Give several to compare builds in one run, e.g. the release build of an older
#   commit checked out in a git worktree.
# Env: WRITES (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES="${WRITES:-2000}"
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
if [ $# -eq 0 ]; then
  cargo build --release --locked -q -p httpraft -p raft-bench
  set -- "$PWD/target/release"
fi

WORK="$(mktemp -d -t syncs-per-write.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports, leader_position
source benchmarks/lib.sh

measure() { # bin_dir
  local bin=$1 dir
  dir="$(mktemp -d -p "$WORK")"
  read -r -a P <<<"$(free_ports 6)"
  write_peers "$dir" "${P[@]}"
  local node_pids=()
  for i in 0 1 2; do
    (cd "$dir" && exec "$bin/httpraft" "$i" --log-level warn >"$dir/node$i.log" 2>&1) &
    PIDS+=($!); node_pids[$i]=$!
  done
  local leader_index
  leader_index=$(leader_position 30 "${P[3]}" "${P[4]}" "${P[5]}")
  local tracers=()
  for i in 0 1 2; do
    strace -f -qq -c -e trace=fdatasync,fsync -o "$dir/strace$i" -p "${node_pids[$i]}" &
    tracers+=($!)
  done
  sleep 1 # let strace attach to every thread
  "$bin/raft-bench" --target "http://127.0.0.1:${P[$((leader_index + 3))]}" --op append \
    --clients 1 --requests "$WRITES" --value-size 64 --quiet --json >"$dir/bench.json"
  sleep 1 # followers learn the last commit
  for t in "${tracers[@]}"; do kill -INT "$t"; done
  for t in "${tracers[@]}"; do wait "$t" 2>/dev/null || true; done
  for i in 0 1 2; do
    local syncs role
    syncs=$(awk '$NF=="fdatasync" || $NF=="fsync" {s += $4} END {print s+0}' "$dir/strace$i")
    role=follower; [ "$i" -eq "$leader_index" ] && role=leader
    python3 -c "import json; r=json.load(open('$dir/bench.json')); print('%-45s %-8s node %d: %6d syncs / %d writes = %.2f per write  (p50 %.2f ms)' % ('$bin', '$role', $i, $syncs, r['ok'], $syncs / r['ok'], r['latency_ms']['p50']))"
  done
  for i in 0 1 2; do kill "${node_pids[$i]}" 2>/dev/null || true; done
  for i in 0 1 2; do wait "${node_pids[$i]}" 2>/dev/null || true; done
}

for bin in "$@"; do
  measure "$(cd "$bin" && pwd)" # the nodes run in directories of their own
done
