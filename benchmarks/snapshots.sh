#!/usr/bin/env bash
# Snapshot and compaction benchmarks (memory as history grows, restart time, snapshot
# transfer speed, throughput with and without snapshots). Builds the release binaries unless
# BIN points at a directory that already holds them; see benchmarks/snapshots.py for the
# parts and settings.
#
# Usage: benchmarks/snapshots.sh [memory] [restart] [transfer] [throughput]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  echo "building httpraft and raft-bench (release)..." >&2
  cargo build --release --locked -q -p httpraft -p raft-bench
fi
exec python3 benchmarks/snapshots.py "$@"
