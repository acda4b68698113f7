"""The hub's spans exported by swift-otel (Examples/OTelHub) to an OTLP/HTTP receiver, with nats-py
traffic. Needs the example built (`swift build --package-path Examples/OTelHub`, several minutes
for swift-otel) and RELAY_OTEL_BIN naming it; skipped otherwise, as the main build does not
include swift-otel."""
import asyncio
import http.server
import json
import os
import re
import signal
import subprocess
import tempfile
import threading

import nats
import pytest

from conftest import run, settled

RELAY_OTEL_BIN = os.environ.get("RELAY_OTEL_BIN")
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Receiver(http.server.ThreadingHTTPServer):
    """Takes OTLP/HTTP exports (protobuf) and keeps their bodies."""

    def __init__(self):
        self.bodies = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.skipif(not RELAY_OTEL_BIN, reason="RELAY_OTEL_BIN (Examples/OTelHub) not built")
def test_spans_reach_an_otlp_receiver_in_the_publishers_trace():
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    directory = tempfile.mkdtemp(prefix="relay-otel-")
    config = os.path.join(directory, "relay.json")
    with open(config, "w") as file:
        json.dump({"ws": "127.0.0.1:0", "tcp": "127.0.0.1:0", "nats": "127.0.0.1:0", "http": None,
                   "data": os.path.join(directory, "data")}, file)
    environment = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
                       OTEL_BSP_SCHEDULE_DELAY="100")
    hub = subprocess.Popen([RELAY_OTEL_BIN, config], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment)
    nats_url = None
    for line in hub.stderr:
        if match := re.search(r"listening on (nats://[^\s\"]+)", line):
            nats_url = match.group(1)
            break
    assert nats_url, "the hub did not start"

    async def scenario():
        nc = await nats.connect(nats_url)
        sub = await nc.subscribe("orders.>")
        await settled(nc)
        await nc.publish("orders.new", b"1", headers={"traceparent": PARENT})
        assert (await sub.next_msg(timeout=5)).headers["traceparent"] == PARENT, "the context arrives intact"
        await nc.publish("orders.old", b"2")
        created = (await sub.next_msg(timeout=5)).headers["traceparent"]
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$", created), "a message without context gets the hub's span's"
        await nc.close()
        return created

    created = run(scenario())
    hub.send_signal(signal.SIGTERM)
    assert hub.wait(30) == 0
    receiver.shutdown()
    exported = b"".join(body for path, body in receiver.bodies if path == "/v1/traces")
    for name in (b"publish orders.new", b"deliver orders.new", b"publish orders.old", b"deliver orders.old"):
        assert name in exported, name
    assert bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736") in exported, "the publisher's trace"
    assert bytes.fromhex(created.split("-")[1]) in exported, "the trace the hub started"
