#!/usr/bin/env python3
"""Cross-hub figures (docs/CLUSTER.md): three routed nats-servers on loopback, and 1, 2, then 3
Relay hubs joined to them (hub i on server i). Each workload runs with the same client
(`relay bench`) once through the hubs and once on the nats-servers directly, alternating, the
publisher on the first and the receivers on the last (fan-out: one subscriber on each); the
median of --runs is reported with the ratio (hubs ÷ nats-server cluster). With --confirmed the
servers run JetStream and a confirmed-publish row is added: through the hubs (their queues are
JetStream streams) against JetStream directly. Started by scripts/bench-cluster, which installs and
builds first.
"""

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The helpers of scripts/bench-vs-nats.py (a dash in its name: loaded by path).
_spec = importlib.util.spec_from_file_location("bench_vs_nats", Path(__file__).with_name("bench-vs-nats.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

WORKLOADS = [
    # name, title, arguments, metrics, quick count
    ("pubsub", "pub/sub 128 B, publisher on the first, subscriber on the last", ["pubsub", "--count", "100000"],
     [bench.THROUGHPUT, bench.P50, bench.P99], "20000"),
    ("fanout", "fan-out 128 B, one subscriber on each", ["fanout", "--count", "30000"], [bench.DELIVERED], "5000"),
    ("reqrep", "request/reply 128 B, requester on the first, responder on the last", ["reqrep", "--count", "5000"],
     [bench.P50, bench.P99, bench.THROUGHPUT], "1000"),
]


CONFIRMED = ("confirmed", "confirmed publish 128 B (JetStream, replicas 3), publisher on the first",
             ["confirmed", "--count", "3000", "--replicas", "3"], [bench.THROUGHPUT, bench.P50, bench.P99], "500")


def start_node(nats_server, name, cluster, routes=None, store=None, cluster_port=-1):
    args = [nats_server, "-a", "127.0.0.1", "-p", "-1", "-n", name, "--cluster_name", cluster, "--cluster",
            f"nats://127.0.0.1:{cluster_port}"]
    if store:
        args += ["-js", "--store_dir", store]
    if routes:
        args += ["--routes", routes]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ports = {}
    ready = threading.Event()

    def read():
        for line in process.stderr:
            if match := re.search(r"(client|route) connections on 127\.0\.0\.1:(\d+)", line):
                ports[match.group(1)] = int(match.group(2))
                if len(ports) == 2:
                    ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(20):
        sys.exit("nats-server did not start")
    return process, ports["client"], ports["route"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relay", required=True, help="the relay executable (release build)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hubs", default="1,2,3", help="hub counts to run, comma-separated")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--confirmed", action="store_true", help="JetStream on, and the confirmed-publish row")
    options = parser.parse_args()

    nats_server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    work = tempfile.mkdtemp(prefix="relay-bench-cluster-")
    processes = []
    rows = []
    try:
        name = f"bench-{os.getpid()}"
        def store(number):
            return os.path.join(work, f"js{number}") if options.confirmed else None

        if options.confirmed:
            # JetStream's cluster wants every server to have its routes from the start.
            cluster_ports = [bench.free_port() for _ in range(3)]
            routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
            nodes = []
            for number in (1, 2, 3):
                process, port, _ = start_node(
                    nats_server, f"n{number}", name, routes, store=store(number), cluster_port=cluster_ports[number - 1])
                nodes.append((process, port))
        else:
            first, first_port, route = start_node(nats_server, "n1", name)
            nodes = [(first, first_port)]
            for number in (2, 3):
                process, port, _ = start_node(nats_server, f"n{number}", name, f"nats://127.0.0.1:{route}")
                nodes.append((process, port))
        processes += [process for process, _ in nodes]
        time.sleep(5 if options.confirmed else 1)  # the routes form, JetStream elects its leader (outside any timing)
        node_urls = [f"nats://127.0.0.1:{port}" for _, port in nodes]
        for count in [int(n) for n in options.hubs.split(",")]:
            hubs, hub_urls = [], []
            for index in range(count):
                port = bench.free_port()
                hub = subprocess.Popen(
                    [options.relay, "serve", "--nats", f"127.0.0.1:{port}", "--ws", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                     "--http", "off", "--data", os.path.join(work, f"hub{count}-{index}"), "--log-level", "warning",
                     "--cluster", node_urls[index]],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                hubs.append(hub)
                bench.wait_for_port(port, hub, "relay serve")
                hub_urls.append(f"nats://127.0.0.1:{port}")
            for workload, title, arguments, metrics, quick in WORKLOADS + ([CONFIRMED] if options.confirmed else []):
                args = list(arguments)
                if options.quick:
                    args[args.index("--count") + 1] = quick
                if workload == "fanout":
                    args += ["--subscribers", str(count)]
                runs = {"nats": [], "relay": []}
                for run in range(options.runs):
                    print(f"{count} hub(s), {workload}: run {run + 1} of {options.runs}", file=sys.stderr)
                    for side, urls in (("nats", node_urls[:count]), ("relay", hub_urls)):
                        receivers = ",".join(urls) if workload == "fanout" else urls[-1]
                        extra = [] if workload == "confirmed" else ["--receive-server", receivers]
                        spec = bench.Workload(workload, title, args + extra, metrics)
                        runs[side].append(bench.run_bench(options.relay, urls[0], spec, False))
                for label, key, higher in metrics:
                    nats_value = statistics.median(bench.lookup(s, key) for s in runs["nats"])
                    relay_value = statistics.median(bench.lookup(s, key) for s in runs["relay"])
                    ratio = relay_value / nats_value if nats_value else float("nan")
                    rows.append((f"{count} hub(s): {title}", label, nats_value, relay_value, ratio, higher))
            for hub in hubs:
                hub.terminate()
                hub.wait(timeout=30)
        options.only = None
        bench.print_table(rows, bench.machine_description() + "; 3 routed nats-servers", options)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
