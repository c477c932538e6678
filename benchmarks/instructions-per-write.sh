#!/usr/bin/env bash
# Instructions per committed write over a whole 3-node httpraft cluster, counted by
# valgrind (cachegrind, no cache simulation): the same work gives the same count whatever
# else the machine does, so builds compare on a noisy machine.
#
# For each build: a cluster runs under cachegrind, WRITES appends of VALUE_SIZE bytes are
# sent to the leader by CLIENTS clients (raft-bench), and the nodes are stopped; then a
# second cluster of the same build runs idle for as long as the first one wrote, and is
# stopped the same way. The difference (start-up, shutdown and idle ticks cancel out),
# divided by the writes, is what a committed write costs: in all, and on the leader and on
# each follower. `cg_annotate` on the leader's file (kept with KEEP=1) shows where it goes.
#
# Usage: benchmarks/instructions-per-write.sh [BIN_DIR ...]
#   BIN_DIR: a directory holding httpraft and raft-bench (default: target/release, built
#   first). Several compare builds in one run, e.g. release 0.1.0's:
#   benchmarks/instructions-per-write.sh target/release "$(dirname "$(scripts/build-release.sh 0.1.0)")"
#   (raft-bench is taken from the first directory when another lacks it).
# Env: WRITES (default 3000), CLIENTS (16), VALUE_SIZE (64), KEEP (1: keep the files),
#   TOOL (cachegrind, or callgrind for inclusive costs by caller: callgrind_annotate
#   --inclusive=yes on the leader's file; it runs slower, the counts are the same).
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES="${WRITES:-3000}"
case "${TOOL:-cachegrind}" in
  cachegrind) TOOL_ARGS=(--tool=cachegrind --cache-sim=no) OUT_OPT=--cachegrind-out-file= ;;
  callgrind) TOOL_ARGS=(--tool=callgrind) OUT_OPT=--callgrind-out-file= ;;
  *) echo "TOOL must be cachegrind or callgrind" >&2; exit 1 ;;
esac
CLIENTS="${CLIENTS:-16}"
VALUE_SIZE="${VALUE_SIZE:-64}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ $# -eq 0 ]; then
  cargo build --release --locked -q -p httpraft -p raft-bench
  set -- "$PWD/target/release"
fi
# The nodes run in directories of their own: every build directory is made absolute.
BINS=()
for b in "$@"; do BINS+=("$(cd "$b" && pwd)"); done
set -- "${BINS[@]}"
BENCH="$1/raft-bench"

WORK="$(mktemp -d -t instructions-per-write.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports, leader_position
source benchmarks/lib.sh

# run BIN_DIR DIR IDLE_SECONDS: a cluster under cachegrind; with IDLE_SECONDS empty it takes
# the writes and prints how long they took, else it idles that long. Leaves cg<i>.out and
# leader (the leader's position in peers.json) in DIR.
run() {
  local bin=$1 dir=$2 idle=$3
  mkdir -p "$dir"
  read -r -a P <<<"$(free_ports 6)"
  write_peers "$dir" "${P[@]}"
  local node_pids=()
  for i in 0 1 2; do
    # Under valgrind a node runs tens of times slower: a long election timeout keeps the
    # leader in place (a leader change would count as work).
    (cd "$dir" && exec valgrind "${TOOL_ARGS[@]}" "$OUT_OPT$dir/cg$i.out" \
      "$bin/httpraft" "$i" --log-level warn --election-ticks 500 \
      >"$dir/node$i.log" 2>&1) &
    PIDS+=($!); node_pids[$i]=$!
  done
  local li
  li=$(leader_position 300 "${P[3]}" "${P[4]}" "${P[5]}")
  echo "$li" >"$dir/leader"
  if [ -z "$idle" ]; then
    local t0 t1
    t0=$(date +%s.%N)
    "$BENCH" --target "http://127.0.0.1:${P[$((li + 3))]}" --op append --clients "$CLIENTS" \
      --requests "$WRITES" --value-size "$VALUE_SIZE" --timeout 60 --quiet --json >"$dir/bench.json"
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)" >"$dir/seconds"
  else
    sleep "$idle"
  fi
  sleep 2 # followers learn the last commit
  # SIGTERM: the nodes stop cleanly and valgrind writes its counts.
  for i in 0 1 2; do kill -TERM "${node_pids[$i]}" 2>/dev/null || true; done
  for i in 0 1 2; do wait "${node_pids[$i]}" 2>/dev/null || true; done
}

summary() { awk '/^summary:/ {print $2}' "$1"; }

for bin in "$@"; do
  [ -x "$bin/raft-bench" ] && BENCH="$bin/raft-bench"
  load="$(mktemp -d -p "$WORK")"
  idle="$(mktemp -d -p "$WORK")"
  run "$bin" "$load" ""
  run "$bin" "$idle" "$(cat "$load/seconds")"
  python3 - "$bin" "$load" "$idle" "$WRITES" <<'PY'
import json, sys
bin_dir, load, idle, writes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def count(d, i):
    for line in open(f"{d}/cg{i}.out"):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {d}/cg{i}.out")
ok = json.load(open(f"{load}/bench.json"))["ok"]
li, li_idle = int(open(f"{load}/leader").read()), int(open(f"{idle}/leader").read())
# Compare the leader with the leader and followers with followers.
lead = (count(load, li) - count(idle, li_idle)) / ok
fl = [count(load, i) for i in range(3) if i != li]
fi = [count(idle, i) for i in range(3) if i != li_idle]
follow = [(a - b) / ok for a, b in zip(sorted(fl), sorted(fi))]
total = lead + sum(follow)
print(f"{bin_dir}: {ok} writes of {writes} acknowledged; instructions per committed write: "
      f"{total:,.0f} in all (leader {lead:,.0f}, followers {follow[0]:,.0f} and {follow[1]:,.0f})")
print(f"  leader's profile: cg_annotate {load}/cg{li}.out (KEEP=1 keeps it)")
PY
done
