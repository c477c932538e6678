#!/usr/bin/env python3
"""Snapshot and compaction benchmarks for httpraft: memory and disk as history grows, restart
time, snapshot transfer speed, and write throughput with and without snapshots.

Each part starts its own 3-node cluster on loopback (fsync on) in a temporary directory,
drives it with raft-bench, prints a Markdown table, and stops everything it started.

Usage: benchmarks/snapshots.sh [memory] [restart] [transfer] [throughput]   (default: all)
Env:   BIN          directory holding httpraft and raft-bench (default: target/release)
       ENTRIES      entries written by `memory` (default 5000000; checkpoints at 100k, then
                    every ENTRIES/10)
       STATE_MIB    size of the state `transfer` moves (default 1024)
       ROUNDS       runs per configuration in `throughput` (default 3)
       DURATION     seconds per `throughput` run (default 20)
       THREADS      --worker-threads per node (default 1: three nodes share the machine)
       NODE_ARGS    extra options for every node, e.g. "--store-cache-bytes 8388608"
       LOG_LEVEL    the nodes' --log-level (default warn); their logs are in the cluster's
                    directory
       KEEP         if set, keep each cluster's directory (data and logs) instead of removing it
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release"))
BIN = os.path.abspath(BIN)
THREADS = os.environ.get("THREADS", "1")
NODE_ARGS = os.environ.get("NODE_ARGS", "").split()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def get_json(url, timeout=2.0):
    """GET url → (status, parsed JSON or None); (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return None, None


def wait_for(what, cond, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError("timed out waiting for " + what)


def dir_bytes(path):
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


class Cluster:
    """Three httpraft processes from one peers.json; nodes can be stopped and started."""

    def __init__(self, name, args=(), start=(0, 1, 2)):
        self.dir = tempfile.mkdtemp(prefix="snapbench-%s." % name)
        p = free_ports(6)
        self.peers = ["127.0.0.1:%d" % x for x in p[:3]]
        self.apis = ["127.0.0.1:%d" % x for x in p[3:]]
        with open(os.path.join(self.dir, "peers.json"), "w") as f:
            json.dump({"peers": self.peers, "apis": self.apis}, f)
        self.args = list(args)
        self.procs = [None, None, None]
        for i in start:
            self.start(i)

    def url(self, i):
        return "http://" + self.apis[i]

    def data(self, i):
        return os.path.join(self.dir, "data", "node-%d" % i)

    def start(self, i):
        out = open(os.path.join(self.dir, "node%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen(
            [os.path.join(BIN, "httpraft"), str(i), "--log-level", os.environ.get("LOG_LEVEL", "warn"),
             "--worker-threads", THREADS] + NODE_ARGS + self.args,
            cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait()
        self.procs[i] = None

    def close(self):
        for i in range(3):
            self.kill(i, signal.SIGTERM)
        if os.environ.get("KEEP"):
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self, i):
        return get_json(self.url(i) + "/v1/status")[1]

    def ready(self, i):
        code, _ = get_json(self.url(i) + "/readyz", timeout=0.5)
        return code == 200

    def leader(self, among=(0, 1, 2)):
        def find():
            for i in among:
                if self.procs[i] is None:
                    continue
                s = self.status(i)
                if s and s.get("role") == "leader":
                    return i + 1  # truthy
            return None
        return wait_for("a leader", find, 30) - 1

    def wait_applied(self, index, nodes=(0, 1, 2), timeout=120):
        for i in nodes:
            wait_for("node %d to apply %d" % (i, index),
                     lambda i=i: (self.status(i) or {}).get("applied_index", 0) >= index,
                     timeout, interval=0.05)

    def rss_kib(self, i):
        with open("/proc/%d/status" % self.procs[i].pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self, i):
        return len(os.listdir("/proc/%d/fd" % self.procs[i].pid))

    def disk(self, i):
        d = self.data(i)
        return {
            "wal": dir_bytes(os.path.join(d, "wal")),
            "app": dir_bytes(os.path.join(d, "app.redb")),
            "snapshots": dir_bytes(os.path.join(d, "snapshots")),
        }

    def bench(self, leader, clients, value_size, requests=None, duration=None):
        cmd = [os.path.join(BIN, "raft-bench"), "--target", self.url(leader), "--op", "append",
               "--clients", str(clients), "--value-size", str(value_size), "--leader-only",
               "--json", "--quiet", "--timeout", "30"]
        if requests is not None:
            cmd += ["--requests", str(requests)]
        if duration is not None:
            cmd += ["--duration", str(duration)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out)


def mib(b):
    return b / (1 << 20)


def part_memory_and_restart(do_memory, do_restart):
    total = int(os.environ.get("ENTRIES", "5000000"))
    step = max(total // 10, 1)
    checkpoints = [100_000] + list(range(step, total + 1, step))
    checkpoints = sorted(set(c for c in checkpoints if c <= total))
    c = Cluster("memory")
    try:
        leader = c.leader()
        rows = []
        written = 0
        log("memory: writing %d entries of 64 B with 64 clients, checkpoints %s" % (total, checkpoints))
        errors = 0
        for cp in checkpoints:
            # Writes that fail (503 during an election, say) are counted and made up for.
            t0 = time.monotonic()
            ok = 0
            while written < cp:
                leader = c.leader()
                r = c.bench(leader, 64, 64, requests=cp - written)
                written += r["ok"]
                ok += r["ok"]
                if r["errors"]:
                    errors += r["errors"]
                    log("  raft-bench errors: %s" % r["errors_by_kind"])
            r = {"throughput": ok / (time.monotonic() - t0)}
            commit = c.status(leader)["commit_index"]
            c.wait_applied(commit)
            st = [c.status(i) for i in range(3)]
            row = {
                "entries": cp,
                "rate": r["throughput"],
                "rss": [c.rss_kib(i) for i in range(3)],
                "fds": [c.fds(i) for i in range(3)],
                "disk": [c.disk(i) for i in range(3)],
                "first_index": [s["first_index"] for s in st],
                "snapshot_index": [s["snapshot_index"] for s in st],
                "taken": [s["snapshots"]["taken"] for s in st],
                "term": st[leader]["term"],
                "leader": leader,
                "errors": errors,
            }
            rows.append(row)
            log("  %d entries: %.0f writes/s, RSS MiB %s, WAL MiB %s, app MiB %s, fds %s, snapshots %s, term %d, errors so far %d" % (
                cp, r["throughput"], [round(x / 1024) for x in row["rss"]],
                [round(mib(d["wal"])) for d in row["disk"]],
                [round(mib(d["app"])) for d in row["disk"]], row["fds"], row["taken"],
                row["term"], errors))
        if do_memory:
            print()
            print("Memory and disk as history grows (3 nodes, default snapshot policy, 64 B values, 64 clients)")
            print()
            print("| entries | writes/s | RSS MiB (leader / followers) | Raft WAL MiB | app store MiB | snapshot files MiB | open fds | first index | snapshots taken | term | failed writes so far |")
            print("|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|")
            for row in rows:
                ln = row["leader"]
                fo = [i for i in range(3) if i != ln]
                d = row["disk"][ln]
                print("| %d | %.0f | %d / %d / %d | %.0f | %.0f | %.0f | %d / %d / %d | %d | %d | %d | %d |" % (
                    row["entries"], row["rate"],
                    row["rss"][ln] // 1024, row["rss"][fo[0]] // 1024, row["rss"][fo[1]] // 1024,
                    mib(d["wal"]), mib(d["app"]), mib(d["snapshots"]),
                    row["fds"][ln], row["fds"][fo[0]], row["fds"][fo[1]],
                    row["first_index"][ln], row["taken"][ln], row["term"], row["errors"]))
            first, last = rows[0], rows[-1]
            ratios = [last["rss"][i] / first["rss"][i] for i in range(3)]
            print()
            print("RSS after %d / after %d entries: %s (target <= 1.5)" % (
                last["entries"], first["entries"], " ".join("%.2f" % x for x in ratios)))
        if do_restart:
            restart_rows = measure_restart(c, leader, written)
            print()
            print("Restart to ready with %d entries of history (kill -9, then start)" % written)
            print()
            print("| node | serving HTTP ms | /readyz 200 ms | caught up ms | RSS after MiB |")
            print("|---|---:|---:|---:|---:|")
            for r in restart_rows:
                print("| %s | %.0f | %.0f | %.0f | %d |" % (
                    r["node"], r["http_ms"], r["ready_ms"], r["caught_up_ms"], r["rss"] // 1024))
    finally:
        c.close()


def measure_restart(c, leader, written):
    rows = []
    follower = (leader + 1) % 3
    for trial in range(3):
        commit = c.status(leader)["commit_index"]
        c.kill(follower)
        t0 = time.monotonic()
        c.start(follower)
        wait_for("HTTP", lambda: c.status(follower) is not None, 30, 0.005)
        t_http = time.monotonic()
        wait_for("ready", lambda: c.ready(follower), 30, 0.005)
        t_ready = time.monotonic()
        c.wait_applied(commit, nodes=(follower,))
        t_caught = time.monotonic()
        rows.append({"node": "follower, run %d" % (trial + 1), "http_ms": (t_http - t0) * 1e3,
                     "ready_ms": (t_ready - t0) * 1e3, "caught_up_ms": (t_caught - t0) * 1e3,
                     "rss": c.rss_kib(follower)})
        log("  restart %s: %s" % (trial, rows[-1]))
    # The whole cluster at once: ready means a leader elected and everything committed applied.
    commit = c.status(leader)["commit_index"]
    for i in range(3):
        c.kill(i)
    t0 = time.monotonic()
    for i in range(3):
        c.start(i)
    wait_for("HTTP", lambda: all(c.status(i) is not None for i in range(3)), 30, 0.005)
    t_http = time.monotonic()
    wait_for("ready", lambda: all(c.ready(i) for i in range(3)), 30, 0.005)
    t_ready = time.monotonic()
    c.wait_applied(commit)
    t_caught = time.monotonic()
    rows.append({"node": "all three at once", "http_ms": (t_http - t0) * 1e3,
                 "ready_ms": (t_ready - t0) * 1e3, "caught_up_ms": (t_caught - t0) * 1e3,
                 "rss": max(c.rss_kib(i) for i in range(3))})
    log("  restart all: %s" % rows[-1])
    return rows


def part_transfer():
    state_mib = int(os.environ.get("STATE_MIB", "1024"))
    value = 64 << 10
    entries = state_mib * (1 << 20) // value
    # One snapshot once the state is in, a short tail: the third node, started empty
    # afterwards, can only catch up through the snapshot.
    c = Cluster("transfer", args=["--snapshot-entries", str(entries), "--snapshot-wal-bytes", "0",
                                  "--snapshot-tail-entries", "100"], start=(0, 1))
    try:
        leader = c.leader(among=(0, 1))
        log("transfer: writing %d entries of 64 KiB (%d MiB) to nodes 0 and 1" % (entries, state_mib))
        r = c.bench(leader, 8, value, requests=entries + 10)
        if r["errors"]:
            raise RuntimeError("raft-bench reported errors: %s" % r)
        wait_for("the leader's snapshot",
                 lambda: (c.status(leader) or {}).get("snapshot_index", 0) >= entries, 600, 0.1)
        snap_bytes = c.disk(leader)["snapshots"]
        log("  leader snapshot at %d, files %.0f MiB" % (c.status(leader)["snapshot_index"], mib(snap_bytes)))

        # Status names nodes by id; the offset from the index into peers.json is learned
        # from the leader's own status.
        id_offset = c.status(leader)["id"] - leader

        def watch(target, stop_at_fraction=None):
            """Polls the leader's transfer to `target`; returns samples until it is gone."""
            samples = []
            def seen():
                for t in c.status(leader)["snapshots"]["transfers"]:
                    if t["peer"] == target + id_offset and t["direction"] == "out":
                        return t
                return None
            first = wait_for("the transfer to start", seen, 60, 0.005)
            t_start = time.monotonic()
            samples.append(first)
            while True:
                t = seen()
                if t is None:
                    break
                samples.append(t)
                if stop_at_fraction and t["total_bytes"] and t["done_bytes"] >= stop_at_fraction * t["total_bytes"]:
                    break
                time.sleep(0.01)
            return samples, time.monotonic() - t_start

        # Run 1: a clean transfer.
        before = c.status(leader)["snapshots"]
        c.start(2)
        samples, wall = watch(2)
        after = c.status(leader)["snapshots"]
        c.wait_applied(c.status(leader)["commit_index"], nodes=(2,), timeout=600)
        moved = after["sent_bytes"] - before["sent_bytes"]
        last = samples[-1]
        rate_status = last["bytes_per_sec"]
        rows = [("clean", moved, 0, wall, moved / wall if wall else 0, rate_status)]
        log("  clean: %s" % (rows[-1],))

        # Run 2: node 2 falls behind a newer snapshot, and its transfer is cut half-way by
        # killing it; restarted, it keeps its partial file and the transfer resumes. (A node
        # whose data directory is wiped is a new member, not a lagging one: it is not used.)
        c.kill(2)
        c.args = ["--snapshot-entries", "200", "--snapshot-wal-bytes", "0",
                  "--snapshot-tail-entries", "100"]
        old_snapshot = c.status(leader)["snapshot_index"]
        for i in (0, 1):
            c.kill(i, signal.SIGTERM)
            c.start(i)
        leader = c.leader(among=(0, 1))
        r = c.bench(leader, 8, value, requests=300)
        if r["errors"]:
            raise RuntimeError("raft-bench reported errors: %s" % r)
        wait_for("a newer snapshot",
                 lambda: (c.status(leader) or {}).get("snapshot_index", 0) > old_snapshot + 200,
                 600, 0.1)
        before = c.status(leader)["snapshots"]
        c.start(2)
        _, wall1 = watch(2, stop_at_fraction=0.5)
        c.kill(2)
        wait_for("the leader to notice", lambda: not any(
            t["peer"] == 2 + id_offset for t in c.status(leader)["snapshots"]["transfers"]), 120, 0.05)
        c.start(2)
        samples, wall2 = watch(2)
        after = c.status(leader)["snapshots"]
        c.wait_applied(c.status(leader)["commit_index"], nodes=(2,), timeout=600)
        moved = after["sent_bytes"] - before["sent_bytes"]
        resumed = after["resumed_bytes"] - before["resumed_bytes"]
        rows.append(("cut at half, receiver restarted", moved, resumed, wall2,
                     (samples[-1]["total_bytes"] - resumed) / wall2 if wall2 else 0,
                     samples[-1]["bytes_per_sec"]))
        log("  resumed: %s" % (rows[-1],))
        st2 = c.status(2)["snapshots"]
        print()
        print("Snapshot transfer of a %d MiB state over loopback (leader -> follower behind the snapshot, 1 MiB chunks)" % state_mib)
        print()
        print("| run | bytes sent (counter, all attempts) | bytes not resent (resumed) | transfer s | MB/s (wall) | MB/s (status) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, moved, resumed, wall, rate, rs in rows:
            print("| %s | %.0f MiB | %.0f MiB | %.2f | %.0f | %.0f |" % (
                name, mib(moved), mib(resumed), wall, rate / 1e6, rs / 1e6))
        print()
        print("Follower after the second run: received %d, installed %d" % (st2["received"], st2["installed"]))
    finally:
        c.close()


def part_throughput():
    rounds = int(os.environ.get("ROUNDS", "3"))
    duration = float(os.environ.get("DURATION", "20"))
    configs = [
        ("snapshots off", ["--snapshot-entries", "0", "--snapshot-wal-bytes", "0"]),
        ("snapshot every 20,000 entries", ["--snapshot-entries", "20000", "--snapshot-tail-entries", "1000"]),
    ]
    results = {name: [] for name, _ in configs}
    taken = {name: [] for name, _ in configs}
    for rnd in range(rounds):
        for name, args in configs:
            c = Cluster("throughput", args=args)
            try:
                leader = c.leader()
                c.bench(leader, 64, 64, duration=2)  # warm-up
                t0 = c.status(leader)["snapshots"]["taken"]
                r = c.bench(leader, 64, 64, duration=duration)
                t1 = c.status(leader)["snapshots"]["taken"]
                results[name].append(r["throughput"])
                taken[name].append(t1 - t0)
                log("  round %d, %s: %.0f writes/s, %d snapshots, errors %d" % (
                    rnd + 1, name, r["throughput"], t1 - t0, r["errors"]))
            finally:
                c.close()
    print()
    print("Write throughput at 64 clients, 64 B values, %gs per run, %d runs each, alternating" % (duration, rounds))
    print()
    print("| configuration | runs (writes/s) | median | snapshots taken per run (leader) |")
    print("|---|---|---:|---|")
    for name, _ in configs:
        print("| %s | %s | %.0f | %s |" % (name, ", ".join("%.0f" % x for x in results[name]),
                                         statistics.median(results[name]),
                                         ", ".join(str(x) for x in taken[name])))
    a, b = (statistics.median(results[n]) for n, _ in configs)
    print()
    print("with snapshots / without: %.3f (target >= 0.90)" % (b / a))


def main():
    parts = sys.argv[1:] or ["memory", "restart", "transfer", "throughput"]
    for p in parts:
        if p not in ("memory", "restart", "transfer", "throughput"):
            sys.exit("unknown part %r; use memory, restart, transfer, throughput" % p)
    if not os.path.exists(os.path.join(BIN, "httpraft")):
        sys.exit("no httpraft in %s; build with cargo build --release" % BIN)
    print("machine: %s, %d CPUs; binaries: %s; worker threads per node: %s; node options: %s" % (
        os.uname().machine, os.cpu_count(), BIN, THREADS, " ".join(NODE_ARGS) or "defaults"))
    if "memory" in parts or "restart" in parts:
        part_memory_and_restart("memory" in parts, "restart" in parts)
    if "transfer" in parts:
        part_transfer()
    if "throughput" in parts:
        part_throughput()


if __name__ == "__main__":
    main()
