#!/usr/bin/env bash
# What security costs: two 3-node httpraft clusters on loopback, fsync on, one plaintext and
# one with mutual TLS between members, HTTPS and bearer tokens; the same raft-bench drives
# each in turn (ROUNDS alternating rounds, so both see the same machine), 64 clients by
# default, 64-byte values. Prints each round and the medians. Stops what it started.
#
# Usage: benchmarks/tls-cost.sh    (CLIENTS=64 DURATION=10 ROUNDS=3 OP=kv-put by default)
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS="${CLIENTS:-64}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
OP="${OP:-kv-put}"

echo "building httpraft and raft-bench (release)..." >&2
cargo build --release --locked -q -p httpraft -p raft-bench
BIN="$PWD/target/release"

WORK="$(mktemp -d -t tls-cost.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports
source benchmarks/lib.sh
read -r -a P <<<"$(free_ports 12)"

start_cluster() { # dir, first port index, extra args per node (a function name)
  local dir=$1 at=$2 extra=$3
  mkdir -p "$dir"
  cat >"$dir/peers.json" <<JSON
{"peers": ["127.0.0.1:${P[$at]}", "127.0.0.1:${P[$((at + 1))]}", "127.0.0.1:${P[$((at + 2))]}"],
 "apis":  ["127.0.0.1:${P[$((at + 3))]}", "127.0.0.1:${P[$((at + 4))]}", "127.0.0.1:${P[$((at + 5))]}"]}
JSON
  for i in 0 1 2; do
    # shellcheck disable=SC2046
    (cd "$dir" && exec "$BIN/httpraft" "$i" --log-level warn $($extra "$i") >"$dir/node$i.log" 2>&1) &
    PIDS+=($!)
  done
}
no_extra() { :; }
tls_extra() {
  echo "--tls-cert $WORK/certs/node-$1.pem --tls-key $WORK/certs/node-$1.key --tls-ca $WORK/certs/ca.pem --tokens $WORK/tokens.json"
}

"$BIN/httpraft" certs init --dir "$WORK/certs" >/dev/null
for i in 0 1 2; do
  "$BIN/httpraft" certs node "$i" --host 127.0.0.1 --dir "$WORK/certs" >/dev/null
done
TOKEN="$("$BIN/httpraft" tokens add bench --role write --file "$WORK/tokens.json" 2>/dev/null)"

start_cluster "$WORK/plain" 0 no_extra
start_cluster "$WORK/tls" 6 tls_extra

wait_ready() { # url, curl args...
  local url=$1; shift
  for _ in $(seq 1 300); do
    if curl -fsS "$@" "$url/readyz" 2>/dev/null | grep -q '"ready":true'; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2; return 1
}
for i in 3 4 5; do wait_ready "http://127.0.0.1:${P[$i]}"; done
for i in 9 10 11; do wait_ready "https://127.0.0.1:${P[$i]}" --cacert "$WORK/certs/ca.pem"; done

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
bench() { # name, targets...
  local name=$1; shift
  local out
  out=$("$BIN/raft-bench" --op "$OP" --clients "$CLIENTS" --duration "$DURATION" --leader-only --json --quiet "$@")
  echo "{\"name\": \"$name\", \"result\": $out}" >>"$RESULTS"
  python3 - "$name" "$out" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[2])
l = r["latency_ms"]
print(f"{sys.argv[1]:>9}: {r['throughput']:>9.0f} req/s  p50 {l['p50']:.2f} ms  p99 {l['p99']:.2f} ms  errors {r['errors']}")
PY
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  bench plaintext --target "http://127.0.0.1:${P[3]}" --target "http://127.0.0.1:${P[4]}" --target "http://127.0.0.1:${P[5]}"
  bench tls --cacert "$WORK/certs/ca.pem" --token "$TOKEN" \
    --target "https://127.0.0.1:${P[9]}" --target "https://127.0.0.1:${P[10]}" --target "https://127.0.0.1:${P[11]}"
done

python3 - "$RESULTS" "$CLIENTS" "$OP" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(name, f):
    return statistics.median(f(r["result"]) for r in rows if r["name"] == name)
tp = {n: med(n, lambda r: r["throughput"]) for n in ("plaintext", "tls")}
p50 = {n: med(n, lambda r: r["latency_ms"]["p50"]) for n in ("plaintext", "tls")}
p99 = {n: med(n, lambda r: r["latency_ms"]["p99"]) for n in ("plaintext", "tls")}
print(f"\n{sys.argv[3]}, {sys.argv[2]} clients, medians of {sum(1 for r in rows if r['name']=='tls')} rounds")
print("| | req/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
for n in ("plaintext", "tls"):
    print(f"| {n} | {tp[n]:,.0f} | {p50[n]:.2f} | {p99[n]:.2f} |")
print(f"| TLS cost | {100 * (1 - tp['tls'] / tp['plaintext']):.1f} % fewer | | {100 * (p99['tls'] / p99['plaintext'] - 1):+.1f} % |")
PY
