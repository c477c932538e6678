#!/usr/bin/env bash
# Write outage during a leadership transfer vs during a leader crash (same run). Builds the
# release binaries unless BIN points at a directory that already holds them; see
# benchmarks/membership.py for the settings.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  echo "building httpraft (release)..." >&2
  cargo build --release --locked -q -p httpraft
fi
exec python3 benchmarks/membership.py "$@"
