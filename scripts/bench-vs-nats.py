#!/usr/bin/env python3
"""Runs `relay bench` workloads against a nats-server and a Relay hub, alternating, and prints the
figures side by side with their ratio (Relay ÷ nats-server; for latency lower is better, so a ratio
below 1.0 means Relay is faster). Started by scripts/bench-vs-nats, which installs and builds first.

Each workload runs --runs times against each server, alternating (nats, relay, nats, relay, ...);
the median of the runs is reported. Servers are started once, on free loopback ports, with fresh
data directories, and stopped at the end.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field


@dataclass
class Workload:
    name: str
    title: str
    args: list
    # (label, key in the JSON summary, True when higher is better)
    metrics: list
    # Run against the hub over LIME ("ws": ws://, "tcp": tcp://) instead of NATS; compared with
    # nats-server over NATS.
    lime: str = ""
    quick_args: list = field(default_factory=list)
    # Compared with the nats-server whose JetStream syncs every write to disk (sync_interval:
    # always, nats-server 2.10 and later), as the hub does: --nats-sync-server.
    synced: bool = False
    # Also run against the cost floor, `relay forwarder` (every PUB to every subscription, no
    # routing): for the workloads whose traffic that is.
    floor: bool = False


THROUGHPUT = ("msg/s", "messagesPerSecond", True)
DELIVERED = ("delivered/s", "deliveredPerSecond", True)
P50 = ("p50 µs", "latencyMicroseconds.p50", False)
P99 = ("p99 µs", "latencyMicroseconds.p99", False)

WORKLOADS = [
    Workload("pubsub", "pub/sub 128 B, NATS", ["pubsub", "--count", "300000"], [THROUGHPUT], quick_args=["--count", "50000"], floor=True),
    Workload("reqrep", "request/reply 128 B, NATS", ["reqrep", "--count", "10000"], [P50, P99, THROUGHPUT],
             quick_args=["--count", "2000"]),
    Workload("fanout", "fan-out to 10, 128 B, NATS", ["fanout", "--subscribers", "10", "--count", "30000"], [DELIVERED],
             quick_args=["--count", "5000"], floor=True),
    Workload("queue", "queue group of 3, 128 B, NATS", ["queue", "--subscribers", "3", "--count", "200000"], [DELIVERED],
             quick_args=["--count", "30000"]),
    Workload("rate", "pub/sub at 20,000 msg/s, NATS", ["pubsub", "--rate", "20000", "--duration", "5"], [P50, P99],
             quick_args=["--duration", "1"], floor=True),
    Workload("confirmed", "confirmed publish (1 publisher), NATS", ["confirmed", "--count", "5000"], [THROUGHPUT, P99],
             quick_args=["--count", "500"]),
    Workload("confirmed16", "confirmed publish (16 publishers), NATS", ["confirmed", "--publishers", "16", "--count", "20000"],
             [THROUGHPUT, P99], quick_args=["--count", "3000"]),
    Workload("lime-pubsub", "pub/sub 128 B, hub over LIME/WebSocket vs nats-server over NATS", ["pubsub", "--count", "100000"],
             [THROUGHPUT], lime="ws", quick_args=["--count", "20000"]),
    Workload("lime-tcp-pubsub", "pub/sub 128 B, hub over LIME/TCP vs nats-server over NATS", ["pubsub", "--count", "100000"],
             [THROUGHPUT], lime="tcp", quick_args=["--count", "20000"]),
    Workload("lime-reqrep", "request/reply, hub over LIME/WebSocket (service call) vs nats-server over NATS",
             ["reqrep", "--count", "5000"], [P50, P99], lime="ws", quick_args=["--count", "1000"]),
    Workload("lime-tcp-reqrep", "request/reply, hub over LIME/TCP (service call) vs nats-server over NATS",
             ["reqrep", "--count", "5000"], [P50, P99], lime="tcp", quick_args=["--count", "1000"]),
    Workload("fanout100", "fan-out to 100, 128 B, NATS", ["fanout", "--subscribers", "100", "--count", "5000"], [DELIVERED],
             quick_args=["--count", "1000"], floor=True),
    Workload("fanout1000", "fan-out to 1,000, 128 B, NATS", ["fanout", "--subscribers", "1000", "--count", "500"], [DELIVERED],
             quick_args=["--count", "100"], floor=True),
    Workload("pubsub64k", "pub/sub 64 KiB, NATS", ["pubsub", "--size", "65536", "--count", "20000"], [THROUGHPUT],
             quick_args=["--count", "3000"], floor=True),
    Workload("pubsub1m", "pub/sub 1 MiB, NATS", ["pubsub", "--size", "1048576", "--count", "500"], [THROUGHPUT],
             quick_args=["--count", "100"], floor=True),
    Workload("confirmed-synced", "confirmed publish (1 publisher), NATS, vs JetStream syncing each write", ["confirmed", "--count",
             "3000"], [THROUGHPUT, P50, P99], quick_args=["--count", "300"], synced=True),
    Workload("confirmed-synced64", "confirmed publish (64 publishers), NATS, vs JetStream syncing each write",
             ["confirmed", "--publishers", "64", "--count", "20000"], [THROUGHPUT, P50, P99], quick_args=["--count", "3000"],
             synced=True),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not open port {port} within {timeout} s")


def lookup(summary, key):
    value = summary
    for part in key.split("."):
        value = value[part]
    return value


def run_bench(relay, server, workload, quick):
    args = list(workload.args)
    if quick:
        # Quick mode replaces the count or duration.
        flag = workload.quick_args[0]
        args[args.index(flag) + 1] = workload.quick_args[1]
    command = [relay, "bench", *args, "--server", server, "--json", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if summary.get("lost", 0):
        print(f"  warning: {summary['lost']} messages lost in {' '.join(command)}", file=sys.stderr)
    return summary


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_memory(relay, server, pid, connections):
    """Resident memory the server adds per idle session: measured before and while `relay bench
    idle` holds `connections` sessions (the client runs in its own process)."""
    before = resident_kib(pid)
    holder = subprocess.Popen([relay, "bench", "idle", "--connections", str(connections), "--server", server],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    if not line or json.loads(line).get("connected") != connections:
        holder.kill()
        sys.exit(f"relay bench idle against {server} did not open {connections} sessions")
    time.sleep(1)  # let the server settle its buffers before reading its memory
    during = resident_kib(pid)
    holder.stdin.close()
    holder.wait(timeout=120)
    return {"before KiB": before, "during KiB": during, "per session KiB": (during - before) / connections}


def machine_description():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = subprocess.run(["nats-server", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}, {version}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay", required=True, help="the relay executable (release build)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server and workload (median reported)")
    parser.add_argument("--quick", action="store_true", help="small counts: checks that everything runs, figures are rough")
    parser.add_argument("--only", help="comma-separated workload names: " + ", ".join(w.name for w in WORKLOADS) + ", idle")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write every run's summary to this file")
    parser.add_argument("--plot", help="also draw the latency percentiles of both servers as an SVG in this file "
                                       "(scripts/bench-plot.py)")
    parser.add_argument("--idle", type=int, default=10000,
                        help="idle sessions for the memory figure (0: skip it); hub over WebSocket, nats-server over NATS")
    parser.add_argument("--nats-sync-server",
                        help="a nats-server of 2.10 or later, run with JetStream's sync_interval: always for the synced rows "
                             "(skipped without it)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the cost floor (relay forwarder: NATS frames moved with no routing) beside the rows it serves")
    parser.add_argument("--relay-threads", type=int,
                        help="event-loop threads for the hub (relay serve --threads); its default is one per core")
    options = parser.parse_args()

    workloads = WORKLOADS
    if options.only:
        names = options.only.split(",")
        unknown = set(names) - {w.name for w in WORKLOADS} - {"idle"}
        if unknown:
            sys.exit(f"unknown workloads: {', '.join(sorted(unknown))}")
        workloads = [w for w in WORKLOADS if w.name in names]

    nats_server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    work = tempfile.mkdtemp(prefix="relay-bench-")
    nats_port, hub_nats, hub_ws, hub_tcp = free_port(), free_port(), free_port(), free_port()
    processes = []
    try:
        # JetStream on, for the confirmed-publish workload (a stream is created by the bench).
        nats = subprocess.Popen(
            [nats_server, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", os.path.join(work, "jetstream")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(nats)
        synced_port = None
        if options.nats_sync_server:
            # JetStream that syncs every write before its PubAck, as the hub confirms after fsync.
            synced_port = free_port()
            config = os.path.join(work, "synced.conf")
            with open(config, "w") as file:
                file.write(f'jetstream {{ store_dir: "{os.path.join(work, "synced")}", sync_interval: always }}\n')
            synced = subprocess.Popen([options.nats_sync_server, "-a", "127.0.0.1", "-p", str(synced_port), "-c", config],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(synced)
            wait_for_port(synced_port, synced, "nats-server (synced)")
        hub = subprocess.Popen(
            [options.relay, "serve", "--nats", f"127.0.0.1:{hub_nats}", "--ws", f"127.0.0.1:{hub_ws}", "--tcp",
             f"127.0.0.1:{hub_tcp}", "--http", "127.0.0.1:0", "--data", os.path.join(work, "relay"), "--log-level", "warning",
             *(["--threads", str(options.relay_threads)] if options.relay_threads else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(hub)
        floor_port = None
        if not options.no_floor:
            floor_port = free_port()
            floor = subprocess.Popen([options.relay, "forwarder", "--listen", f"127.0.0.1:{floor_port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(floor)
            wait_for_port(floor_port, floor, "relay forwarder")
        wait_for_port(nats_port, nats, "nats-server")
        wait_for_port(hub_nats, hub, "relay serve")
        wait_for_port(hub_ws, hub, "relay serve")

        threads = f"relay serve --threads {options.relay_threads}" if options.relay_threads else "relay serve's default threads"
        machine = f"{machine_description()}; {threads}"
        print(f"machine: {machine}", file=sys.stderr)
        rows = []
        every_run = []
        for workload in workloads:
            if workload.synced and not synced_port:
                print(f"{workload.name}: skipped (no --nats-sync-server)", file=sys.stderr)
                continue
            nats_url = f"nats://127.0.0.1:{synced_port if workload.synced else nats_port}"
            relay_url = {"ws": f"ws://127.0.0.1:{hub_ws}", "tcp": f"tcp://127.0.0.1:{hub_tcp}"}.get(
                workload.lime, f"nats://127.0.0.1:{hub_nats}")
            runs = {"nats": [], "relay": [], "floor": []}
            sides = [("nats", nats_url), ("relay", relay_url)]
            if workload.floor and floor_port:
                sides.append(("floor", f"nats://127.0.0.1:{floor_port}"))
            for index in range(options.runs):
                print(f"{workload.name}: run {index + 1} of {options.runs}", file=sys.stderr)
                for side, url in sides:
                    summary = run_bench(options.relay, url, workload, options.quick)
                    runs[side].append(summary)
                    every_run.append({**summary, "workload": workload.name, "side": side})
            for label, key, higher_is_better in workload.metrics:
                nats_value = statistics.median(lookup(s, key) for s in runs["nats"])
                relay_value = statistics.median(lookup(s, key) for s in runs["relay"])
                ratio = relay_value / nats_value if nats_value else float("nan")
                floor_value = statistics.median(lookup(s, key) for s in runs["floor"]) if runs["floor"] else None
                rows.append((workload.title, label, nats_value, relay_value, ratio, higher_is_better, floor_value))

        if options.idle and (not options.only or "idle" in options.only.split(",")):
            print(f"idle: {options.idle} sessions each", file=sys.stderr)
            nats_idle = idle_memory(options.relay, f"nats://127.0.0.1:{nats_port}", nats.pid, options.idle)
            hub_idle = idle_memory(options.relay, f"ws://127.0.0.1:{hub_ws}", hub.pid, options.idle)
            every_run.append({"workload": "idle", "nats": nats_idle, "relay": hub_idle})
            rows.append((f"{options.idle} idle sessions (hub: LIME/WebSocket, nats-server: NATS)", "KiB per session",
                         nats_idle["per session KiB"], hub_idle["per session KiB"],
                         hub_idle["per session KiB"] / nats_idle["per session KiB"], False, None))

        if options.json or options.plot:
            summary_file = options.json or os.path.join(work, "runs.json")
            with open(summary_file, "w") as output:
                json.dump({"machine": machine, "runs": every_run}, output, indent=1)
            if options.plot:
                plotter = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-plot.py")
                # Unpaced bursts' latencies measure the burst's queueing: only the workloads whose
                # latency the table reports are drawn.
                timed = ",".join(w.name for w in workloads if any(m in (P50, P99) for m in w.metrics))
                subprocess.run([sys.executable, plotter, summary_file, options.plot, timed], check=True)
        print_table(rows, machine, options)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows, machine, options):
    def number(value):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"

    with_floor = any(len(row) > 6 and row[6] is not None for row in rows)
    header = ("workload", "metric", "nats-server", "relay", "relay ÷ nats") + (("floor", "relay ÷ floor") if with_floor else ())
    lines = []
    for row in rows:
        title, label, nats_value, relay_value, ratio, higher_is_better = row[:6]
        floor_value = row[6] if len(row) > 6 else None
        better = "better" if (ratio >= 1) == higher_is_better else "worse"
        if abs(ratio - 1) < 0.005:
            better = "same"
        line = (title, label, number(nats_value), number(relay_value), f"{ratio:.2f}× ({better})")
        if with_floor:
            line += (number(floor_value), f"{relay_value / floor_value:.2f}×") if floor_value else ("", "")
        lines.append(line)
    runs = f"median of {options.runs} run(s) each, alternated{', quick counts' if options.quick else ''}"
    if options.markdown:
        print(f"Machine: {machine}; {runs}.\n")
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    widths = [max(len(str(row[i])) for row in lines + [header]) for i in range(len(header))]
    print(f"machine: {machine}; {runs}")
    for row in [header] + lines:
        print("  ".join(str(cell).ljust(widths[i]) if i < 2 else str(cell).rjust(widths[i]) for i, cell in enumerate(row)))


if __name__ == "__main__":
    main()
