#!/usr/bin/env bash
# Side-by-side: a 3-node etcd (Debian's etcd-server) and a 3-node httpraft on loopback, data
# in temporary directories, fsync on in both, driven by the same raft-bench at several
# client counts with 64-byte values. Prints one table with the ratios. Stops everything it
# started (by PID) on exit, failure or Ctrl-C, and removes its temporary directory.
#
# Usage: benchmarks/compare-etcd.sh            (CLIENTS="1 16 64 256" DURATION=10 by default)
#        THREADS=1 benchmarks/compare-etcd.sh  (both systems limited to 1 thread of parallelism
#        per process: GOMAXPROCS for etcd, --worker-threads for httpraft; useful when 3 nodes
#        and the client share a 2-core machine. Unset: each system's default.)
#        BEFORE=<dir> benchmarks/compare-etcd.sh  (also runs the httpraft binary in <dir>, e.g.
#        an older commit's release build, as "before", in the same run, and prints a second
#        table: before vs after); BEFORE_ARGS="..." gives that cluster more httpraft options
#        (e.g. BEFORE=target/release BEFORE_ARGS="--flow-control static": one build, two
#        settings)
#        BATCH=100 benchmarks/compare-etcd.sh  (also runs httpraft's batched appends, 100
#        entries per POST /v1/log, at each client count, and prints entries per second)
#        READS=1 benchmarks/compare-etcd.sh  (also compares linearizable key reads: etcd's
#        range through its gateway vs GET /v1/kv/<key>, clients spread over all members)
#        WRITES=0 skips the write comparison (with READS=1: reads only)
#        LEASE=1 (with READS=1) also runs a second httpraft cluster with --lease-reads and
#        compares its reads too
#        H2=1 also runs httpraft's single appends over HTTP/2 (raft-bench --http2: one
#        connection per endpoint for all clients)
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS="${CLIENTS:-1 16 64 256}"
DURATION="${DURATION:-10}"
VALUE_SIZE="${VALUE_SIZE:-64}"
THREADS="${THREADS:-}"
BEFORE="${BEFORE:-}"
read -r -a BEFORE_EXTRA <<<"${BEFORE_ARGS:-}"
if [ -n "$BEFORE" ]; then BEFORE=$(cd "$BEFORE" && pwd); fi # the nodes run in their own directories
BATCH="${BATCH:-}"
READS="${READS:-}"
WRITES="${WRITES:-1}"
LEASE="${LEASE:-}"
H2="${H2:-}"
ETCD_ENV=()
HR_ARGS=()
if [ -n "$THREADS" ]; then
  ETCD_ENV=(GOMAXPROCS="$THREADS")
  HR_ARGS=(--worker-threads "$THREADS")
fi

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server with apt..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed for the table" >&2; exit 1; }

echo "building httpraft and raft-bench (release)..." >&2
cargo build --release --locked -q -p httpraft -p raft-bench
BIN="$PWD/target/release"

WORK="$(mktemp -d -t compare-etcd.XXXXXX)"
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

wait_http() { # url, expected substring
  for _ in $(seq 1 300); do
    if curl -fsS "$1" 2>/dev/null | grep -q "$2"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1; the last lines of each node's log:" >&2
  for f in "$WORK"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done
  return 1
}

read -r -a P <<<"$(free_ports 24)"

# --- etcd: 3 members, default fsync behaviour (every commit is synced) ---
CLUSTER="e0=http://127.0.0.1:${P[3]},e1=http://127.0.0.1:${P[4]},e2=http://127.0.0.1:${P[5]}"
ETCD_URLS=()
for i in 0 1 2; do
  c=${P[$i]}; p=${P[$((i + 3))]}
  env "${ETCD_ENV[@]}" etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    --logger zap --log-level error >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!); ETCD_PIDS[$i]=$!
  ETCD_URLS+=("http://127.0.0.1:$c")
done

# --- httpraft clusters: 3 nodes from a peers.json, fsync always (the default) ---
start_cluster() { # name, directory of the httpraft binary, first of its 6 ports in P, extra args...
  local name=$1 bin=$2 base=$3; shift 3
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name/peers.json" <<JSON
{"peers": ["127.0.0.1:${P[$base]}", "127.0.0.1:${P[$((base + 1))]}", "127.0.0.1:${P[$((base + 2))]}"],
 "apis":  ["127.0.0.1:${P[$((base + 3))]}", "127.0.0.1:${P[$((base + 4))]}", "127.0.0.1:${P[$((base + 5))]}"]}
JSON
  CL_URLS=(); CL_PIDS=()
  for i in 0 1 2; do
    (cd "$WORK/$name" && exec "$bin/httpraft" "$i" --log-level warn "$@" "${HR_ARGS[@]}" >"$WORK/$name$i.log" 2>&1) &
    PIDS+=($!); CL_PIDS[$i]=$!
    CL_URLS+=("http://127.0.0.1:${P[$((base + 3 + i))]}")
  done
}
start_cluster httpraft "$BIN" 6
HR_URLS=("${CL_URLS[@]}"); HR_PIDS=("${CL_PIDS[@]}")

# --- optionally, the same for an older httpraft build ---
BF_URLS=()
BF_PIDS=()
if [ -n "$BEFORE" ]; then
  start_cluster before "$BEFORE" 12 "${BEFORE_EXTRA[@]}"
  BF_URLS=("${CL_URLS[@]}"); BF_PIDS=("${CL_PIDS[@]}")
fi

# --- optionally, a second httpraft cluster serving reads from the leader lease ---
LS_URLS=()
LS_PIDS=()
if [ -n "$LEASE" ]; then
  start_cluster lease "$BIN" 18 --lease-reads
  LS_URLS=("${CL_URLS[@]}"); LS_PIDS=("${CL_PIDS[@]}")
fi

for u in "${ETCD_URLS[@]}"; do wait_http "$u/health" '"true"'; done
for u in "${HR_URLS[@]}" "${BF_URLS[@]}" "${LS_URLS[@]}"; do wait_http "$u/readyz" '"ready":true'; done

cpu_ticks() { # total utime+stime of the given PIDs, in clock ticks
  local t=0
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then
      t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    fi
  done
  echo "$t"
}

# The server processes themselves (the subshell for httpraft execs into the binary).
ETCD_SRV=("${ETCD_PIDS[@]}")
HR_SRV=("${HR_PIDS[@]}")

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
run() { # name, op, clients, pids... (EXTRA_ARGS: more raft-bench arguments)
  local name=$1 op=$2 clients=$3; shift 3
  local targets=()
  if [ "$name" = etcd ] || [ "$name" = etcd-read ]; then for u in "${ETCD_URLS[@]}"; do targets+=(--target "$u"); done
  elif [ "$name" = before ] || [ "$name" = before-read ] || [ "$name" = before-batched ]; then for u in "${BF_URLS[@]}"; do targets+=(--target "$u"); done
  elif [ "$name" = lease-read ]; then for u in "${LS_URLS[@]}"; do targets+=(--target "$u"); done
  else for u in "${HR_URLS[@]}"; do targets+=(--target "$u"); done; fi
  local before after
  before=$(cpu_ticks "$@")
  local out
  out=$("$BIN/raft-bench" "${targets[@]}" --op "$op" --clients "$clients" --duration "$DURATION" \
        --value-size "$VALUE_SIZE" ${SPREAD:---leader-only} --json --quiet ${EXTRA_ARGS:-})
  after=$(cpu_ticks "$@")
  echo "{\"system\": \"$name\", \"cpu_ticks\": $((after - before)), \"result\": $out}" >>"$RESULTS"
  echo "  $name, $clients clients: $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f req/s, p99 %.2f ms, errors %d%s" % (r["throughput"], r["latency_ms"]["p99"], r["errors"], (" " + json.dumps(r.get("errors_by_kind"))) if r["errors"] else ""))')" >&2
}

echo "running: ${DURATION}s per point, ${VALUE_SIZE}-byte values, clients: $CLIENTS, threads per process: ${THREADS:-default}" >&2
for c in $CLIENTS; do
  if [ "$WRITES" != 0 ]; then
    run etcd etcd-put "$c" "${ETCD_SRV[@]}"
    run httpraft append "$c" "${HR_SRV[@]}"
    if [ -n "$BEFORE" ]; then run before append "$c" "${BF_PIDS[@]}"; fi
    if [ -n "$H2" ]; then EXTRA_ARGS="--http2" run httpraft-h2 append "$c" "${HR_SRV[@]}"; fi
  fi
  if [ -n "$BATCH" ]; then EXTRA_ARGS="--batch $BATCH" run batched append "$c" "${HR_SRV[@]}"; fi
  if [ -n "$BATCH" ] && [ -n "$BEFORE" ]; then EXTRA_ARGS="--batch $BATCH" run before-batched append "$c" "${BF_PIDS[@]}"; fi
  if [ -n "$READS" ]; then
    SPREAD=" " run etcd-read etcd-get "$c" "${ETCD_SRV[@]}"
    SPREAD=" " run httpraft-read kv-get "$c" "${HR_SRV[@]}"
    if [ -n "$LEASE" ]; then SPREAD=" " run lease-read kv-get "$c" "${LS_PIDS[@]}"; fi
    if [ -n "$BEFORE" ]; then SPREAD=" " run before-read kv-get "$c" "${BF_PIDS[@]}"; fi
  fi
done

python3 - "$RESULTS" "$(getconf CLK_TCK)" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
hz = float(sys.argv[2])
by = {}
for r in rows:
    by.setdefault(r["result"]["clients"], {})[r["system"]] = r
def cpu_per_100k(r):
    ok = r["result"]["ok"]
    return (r["cpu_ticks"] / hz) / ok * 100000 if ok else float("nan")
print()
print("3-node clusters on loopback, fsync on, %d-byte values, same load generator (raft-bench), threads per process: %s" % (rows[0]["result"]["value_size"], sys.argv[3] or "default"))
def versus(a, b, what):
    """etcd (system a) against httpraft (system b), one row per client count."""
    hdr = ("| clients | etcd %s/s | httpraft %s/s | ratio | etcd p50 ms | httpraft p50 ms | etcd p99 ms"
           " | httpraft p99 ms | errors e/h | CPU s per 100k %s e/h |") % (what, what, what)
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for c in sorted(by):
        if a not in by[c]:
            continue
        e, h = by[c][a], by[c][b]
        er, hr = e["result"], h["result"]
        ratio = hr["throughput"] / er["throughput"] if er["throughput"] else float("nan")
        print("| %d | %.0f | %.0f | %.2fx | %.2f | %.2f | %.2f | %.2f | %d / %d | %.1f / %.1f |" % (
            c, er["throughput"], hr["throughput"], ratio,
            er["latency_ms"]["p50"], hr["latency_ms"]["p50"],
            er["latency_ms"]["p99"], hr["latency_ms"]["p99"],
            er["errors"], hr["errors"], cpu_per_100k(e), cpu_per_100k(h)))
if any("etcd" in v for v in by.values()):
    versus("etcd", "httpraft", "writes")
if any("etcd-read" in v for v in by.values()):
    print()
    print("linearizable key reads, clients spread over the 3 members (etcd: range through its gateway; httpraft: GET /v1/kv/<key>, followers ask the leader for a read index)")
    versus("etcd-read", "httpraft-read", "reads")
if any("httpraft-h2" in v for v in by.values()):
    print()
    print("the same single appends over HTTP/2 (one connection per endpoint)")
    versus("etcd", "httpraft-h2", "writes")
if any("lease-read" in v for v in by.values()):
    print()
    print("the same reads from a cluster started with --lease-reads (the leader answers from its lease)")
    versus("etcd-read", "lease-read", "reads")
if any("batched" in v for v in by.values()):
    print()
    print("httpraft batched appends (POST /v1/log {\"entries\": [...]}), same run")
    hdr = "| build | clients | entries per request | requests/s | entries/s | p50 ms | p99 ms | errors | CPU s per 100k entries |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for c in sorted(by):
        for name, build in (("batched", "after"), ("before-batched", "before")):
            b = by[c].get(name)
            if not b:
                continue
            br = b["result"]
            n = br["ok"] * br["batch"]
            cpu = (b["cpu_ticks"] / hz) / n * 100000 if n else float("nan")
            print("| %s | %d | %d | %.0f | %.0f | %.2f | %.2f | %d | %.2f |" % (
                build, c, br["batch"], br["throughput"], br["entries_per_sec"],
                br["latency_ms"]["p50"], br["latency_ms"]["p99"], br["errors"], cpu))
if any("before" in v for v in by.values()):
    print()
    print("httpraft before vs after, same run")
    hdr = "| clients | before req/s | after req/s | after/before | before p50 ms | after p50 ms | before p99 ms | after p99 ms | CPU s per 100k writes before/after |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for c in sorted(by):
        if "before" not in by[c]:
            continue
        b, h = by[c]["before"], by[c]["httpraft"]
        br, hr = b["result"], h["result"]
        ratio = hr["throughput"] / br["throughput"] if br["throughput"] else float("nan")
        print("| %d | %.0f | %.0f | %.2fx | %.2f | %.2f | %.2f | %.2f | %.1f / %.1f |" % (
            c, br["throughput"], hr["throughput"], ratio,
            br["latency_ms"]["p50"], hr["latency_ms"]["p50"],
            br["latency_ms"]["p99"], hr["latency_ms"]["p99"],
            cpu_per_100k(b), cpu_per_100k(h)))
if any("before-read" in v for v in by.values()):
    print()
    print("httpraft linearizable reads before vs after, same run")
    hdr = "| clients | before reads/s | after reads/s | after/before | before p99 ms | after p99 ms | CPU s per 100k reads before/after |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for c in sorted(by):
        b, h = by[c]["before-read"], by[c]["httpraft-read"]
        br, hr = b["result"], h["result"]
        ratio = hr["throughput"] / br["throughput"] if br["throughput"] else float("nan")
        print("| %d | %.0f | %.0f | %.2fx | %.2f | %.2f | %.1f / %.1f |" % (
            c, br["throughput"], hr["throughput"], ratio,
            br["latency_ms"]["p99"], hr["latency_ms"]["p99"],
            cpu_per_100k(b), cpu_per_100k(h)))
PY
