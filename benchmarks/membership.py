#!/usr/bin/env python3
"""Write outage during a leadership transfer vs during a leader crash, in the same run.

A 3-node cluster on loopback (fsync on) takes writes from WRITERS client threads
(POST /v1/log, redirects followed). Each round either hands leadership over
(POST /v1/leader/transfer) or kills the leader with SIGKILL (and restarts it once a new
leader is elected); the outage is the longest time without any acknowledged write around
the event. Prints the median and worst outage of each kind as a Markdown table.

Usage: benchmarks/membership.sh
Env:   BIN       directory holding httpraft (default: target/release)
       ROUNDS    events of each kind (default 10)
       WRITERS   client threads (default 16)
       THREADS   --worker-threads per node (default 1)
       NODE_ARGS extra options for every node (default: the defaults, 300-600 ms elections)
"""

import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from snapshots import BIN, THREADS, NODE_ARGS, Cluster, log, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "10"))
WRITERS = int(os.environ.get("WRITERS", "16"))


def post(api, path, body, timeout=5.0):
    """POST JSON to api, following 307 redirects; returns (status, parsed body or None)."""
    for _ in range(5):
        host, port = api.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            c.request("POST", path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status == 307:
                api = r.getheader("Location").split("/")[2]
                continue
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, None
        except OSError:
            return None, None
        finally:
            c.close()
    return None, None


class Writers:
    """Client threads appending to the log; they record when each write was acknowledged."""

    def __init__(self, cluster, n):
        self.cluster = cluster
        self.acks = []
        self.lock = threading.Lock()
        self.stop = False
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(n)]
        for t in self.threads:
            t.start()

    def run(self, k):
        seq = 0
        attempt = 0
        while not self.stop:
            api = self.cluster.apis[(k + attempt) % 3]
            code, _ = post(api, "/v1/log", {"entry": "w%d-%d" % (k, seq)}, timeout=2.0)
            if code == 201:
                with self.lock:
                    self.acks.append(time.monotonic())
                seq += 1
            else:
                attempt += 1
                time.sleep(0.005)

    def longest_gap(self, start, end):
        """The longest time without an acknowledgement within [start, end]."""
        with self.lock:
            times = sorted(t for t in self.acks if start <= t <= end)
        points = [start] + times + [end]
        return max(b - a for a, b in zip(points, points[1:]))

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join()


def settle(writers, seconds=1.0):
    time.sleep(seconds)
    with writers.lock:
        n = len(writers.acks)
    wait_for("writes to flow", lambda: len(writers.acks) > n + 50, 30)


def main():
    if not os.path.exists(os.path.join(BIN, "httpraft")):
        sys.exit("no httpraft in %s; build with cargo build --release" % BIN)
    print("machine: %s, %d CPUs; binaries: %s; worker threads per node: %s; node options: %s; "
          "%d writers, %d rounds" % (os.uname().machine, os.cpu_count(), BIN, THREADS,
                                     " ".join(NODE_ARGS) or "defaults", WRITERS, ROUNDS))
    c = Cluster("membership")
    try:
        wait_for("all nodes ready", lambda: all(c.ready(i) for i in range(3)), 30)
        w = Writers(c, WRITERS)
        settle(w)
        transfer, crash = [], []
        for r in range(ROUNDS):
            # A transfer to the next node.
            leader = c.leader()
            to = (leader + 1) % 3
            t0 = time.monotonic()
            code, body = post(c.apis[leader], "/v1/leader/transfer", {"to": to})
            if code != 200:
                raise RuntimeError("transfer failed: %s %s" % (code, body))
            settle(w)
            transfer.append(w.longest_gap(t0, time.monotonic()))
            # A crash of the leader, restarted once another leads.
            leader = c.leader()
            t0 = time.monotonic()
            c.kill(leader)
            c.leader(among=[i for i in range(3) if i != leader])
            settle(w)
            crash.append(w.longest_gap(t0, time.monotonic()))
            c.start(leader)
            wait_for("node %d ready" % leader, lambda: c.ready(leader), 30)
            settle(w)
            log("round %d: transfer %.0f ms, crash %.0f ms" % (r + 1, transfer[-1] * 1000, crash[-1] * 1000))
        w.close()
        print()
        print("| event | rounds | median outage | worst outage |")
        print("|---|---|---|---|")
        for name, xs in (("leadership transfer", transfer), ("leader crash (SIGKILL)", crash)):
            print("| %s | %d | %.0f ms | %.0f ms |" % (name, len(xs), statistics.median(xs) * 1000,
                                                     max(xs) * 1000))
    finally:
        c.close()


if __name__ == "__main__":
    main()
