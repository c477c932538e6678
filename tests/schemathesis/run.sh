#!/usr/bin/env bash
# Property-based fuzzing of the whole HTTP API from its own OpenAPI document: schemathesis
# (from PyPI, pinned below) generates requests from GET /v1/openapi.json, valid and invalid,
# sends them to a real three-node cluster that checks tokens, and checks every answer: no
# 5xx, every status, content type and body as documented, invalid input refused and valid
# input accepted. The cluster must still be whole afterwards. Part of `.ci/run`.
#
#   tests/schemathesis/run.sh               # the CI run (a fixed seed)
#   ST_SEED=123 ST_EXAMPLES=200 tests/schemathesis/run.sh   # another seed, more cases
#
# Membership removals and promotions are left out: a fuzzer removing voters at random
# would end the cluster's quorum, which no API can answer other than with 503. Additions
# (learners, which never count towards a majority) and leadership transfers are in.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

ST_VERSION=4.32.5
ST_SEED=${ST_SEED:-20261207}
ST_EXAMPLES=${ST_EXAMPLES:-25}
venv=target/schemathesis-venv

if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version | grep -q "$ST_VERSION"; then
    echo "== installing schemathesis $ST_VERSION"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

cargo build --quiet --release --locked -p httpraft
bin="$root/target/release/httpraft"

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Six free loopback ports.
read -r -a ports <<< "$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
')"
cat > "$dir/peers.json" <<JSON
{"peers": ["127.0.0.1:${ports[0]}", "127.0.0.1:${ports[1]}", "127.0.0.1:${ports[2]}"],
 "apis":  ["127.0.0.1:${ports[3]}", "127.0.0.1:${ports[4]}", "127.0.0.1:${ports[5]}"]}
JSON
token=$("$bin" tokens add fuzzer --role admin --file "$dir/tokens.json" 2>/dev/null)
for i in 0 1 2; do
    # Long polls wait at most the request timeout less a second: short, so that the
    # fuzzer's `wait` values cost little.
    (cd "$dir" && exec "$bin" "$i" --tokens tokens.json --http-request-timeout-ms 5000 \
        > "$dir/node-$i.log" 2>&1) &
    pids+=($!)
done

ready() {
    for i in 0 1 2; do
        curl -sf "http://127.0.0.1:${ports[$((3 + i))]}/readyz" > /dev/null || return 1
    done
}
leader_api() {
    curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:${ports[3]}/v1/status" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["leader_api"] or "")'
}
for _ in $(seq 1 300); do
    if ready && [ -n "$(leader_api)" ]; then break; fi
    sleep 0.1
done
ready || { echo "the cluster did not start"; tail -n 20 "$dir"/node-*.log; exit 1; }
target=$(leader_api)
echo "== schemathesis $ST_VERSION against http://$target (seed $ST_SEED, $ST_EXAMPLES examples per operation)"

status=0
"$venv/bin/st" --config-file "$root/tests/schemathesis/schemathesis.toml" run \
    "http://$target/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --exclude-path-regex '^/v1/members/\{id\}' \
    --seed "$ST_SEED" \
    --max-examples "$ST_EXAMPLES" \
    --request-timeout 15 \
    --no-color || status=$?

# Whatever the fuzzer sent, the cluster still stands: every node ready, one leader.
for _ in $(seq 1 100); do ready && break; sleep 0.1; done
if ! ready; then
    echo "after the run, not every node is ready"
    tail -n 30 "$dir"/node-*.log
    status=1
fi
if grep -h -E "panicked|ERROR" "$dir"/node-*.log; then
    echo "a node logged an error or a panic (above)"
    status=1
fi
exit "$status"
