# Shared by the benchmark scripts: `source "$(dirname "$0")/lib.sh"`.

# Prints N loopback ports free now.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# write_peers DIR P0 P1 P2 P3 P4 P5: DIR/peers.json for three nodes on loopback, Raft on the
# first three ports and the API on the last three.
write_peers() {
  local dir=$1
  shift
  cat >"$dir/peers.json" <<JSON
{"peers": ["127.0.0.1:$1", "127.0.0.1:$2", "127.0.0.1:$3"],
 "apis":  ["127.0.0.1:$4", "127.0.0.1:$5", "127.0.0.1:$6"]}
JSON
}

# leader_position SECONDS API_PORT...: waits up to SECONDS for one of the nodes behind these
# loopback API ports to say it leads, and prints its position in the list (from 0). Nodes
# are asked for their role, not for the leader's id, so builds that number nodes from 0
# and from 1 alike are measured. Fails after SECONDS.
leader_position() {
  local seconds=$1 deadline i port
  shift
  deadline=$(($(date +%s) + seconds))
  while [ "$(date +%s)" -le "$deadline" ]; do
    i=0
    for port in "$@"; do
      if curl -fsS --max-time 5 "http://127.0.0.1:$port/v1/status" 2>/dev/null |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("role") == "leader" else 1)' 2>/dev/null; then
        echo "$i"
        return 0
      fi
      i=$((i + 1))
    done
    sleep 0.1
  done
  echo "no node said it leads within $seconds s" >&2
  return 1
}
