"""Hubs clustered over three real nats-servers (routes on loopback), with third-party clients on
different hubs: lime-python on one, nats-py on another (docs/CLUSTER.md)."""
import asyncio
import re
import shutil
import subprocess
import threading
import uuid

import nats
import pytest
from lime_python import Command, Message

from conftest import Hub, run, settled
from test_lime_python import open_channel
from test_pubsub_services import serve_adder

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NATSNode:
    """One nats-server of the test cluster, on ports it picks."""

    def __init__(self, name, cluster_name, routes=None):
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", "-1", "-n", name, "--cluster_name", cluster_name,
                "--cluster", "nats://127.0.0.1:-1"]
        if routes:
            args += ["--routes", routes]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = self.route_port = None
        ready = threading.Event()

        def read():
            for line in self.process.stderr:
                if match := re.search(r"client connections on 127\.0\.0\.1:(\d+)", line):
                    self.port = int(match.group(1))
                if match := re.search(r"route connections on 127\.0\.0\.1:(\d+)", line):
                    self.route_port = int(match.group(1))
                if self.port and self.route_port:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20):
            self.process.kill()
            raise RuntimeError("nats-server did not start")

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        self.process.kill()
        self.process.wait(10)


class Cluster:
    """Three routed nats-servers and a hub on each (`relay serve --cluster`)."""

    def __init__(self):
        name = "relay-interop-" + uuid.uuid4().hex[:8]
        first = NATSNode("n1", name)
        self.nodes = [first] + [NATSNode(f"n{n}", name, f"nats://127.0.0.1:{first.route_port}") for n in (2, 3)]
        run(self._formed())
        self.hubs = [Hub("--cluster", node.url) for node in self.nodes]

    async def _formed(self):
        clients = [await nats.connect(node.url) for node in self.nodes]
        seen = set()

        async def note(message):
            seen.add(message.data.decode())

        for index, client in enumerate(clients):
            await client.subscribe(f"formed.{index}", cb=note)
            await settled(client)
        wanted = {f"{i}>{j}" for i in range(3) for j in range(3) if i != j}
        while not wanted <= seen:
            for i, client in enumerate(clients):
                for j in range(3):
                    if i != j:
                        await client.publish(f"formed.{j}", f"{i}>{j}".encode())
                await client.flush()
            await asyncio.sleep(0.05)
        for client in clients:
            await client.close()

    def stop(self):
        codes = [hub.stop() for hub in self.hubs]
        for node in self.nodes:
            node.stop()
        return codes


@pytest.fixture(scope="module")
def cluster():
    instance = Cluster()
    yield instance
    assert instance.stop() == [0, 0, 0], "".join(line for hub in instance.hubs for line in hub.log)


async def until(condition, probe, timeout=20):
    """Probes until `condition()` holds: interest takes a moment to cross the cluster's routes."""
    async def loop():
        while not condition():
            await probe()
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


def test_lime_python_on_one_hub_and_nats_py_on_another_exchange_publications(cluster):
    a, c = cluster.hubs[0], cluster.hubs[2]

    async def scenario():
        lime, _, inbox, _ = await open_channel(a.ws_url, "py@relay.local", "1")
        subscribed = await lime.process_command_async(Command("subscribe", "/topics/news.*"), 5)
        assert subscribed.status == "success"
        client = await nats.connect(c.nats_url)
        at_nats = asyncio.Queue()
        await client.subscribe("news.*", cb=at_nats.put)
        await settled(client)
        # From nats-py on hub C to lime-python on hub A.
        await until(lambda: not inbox.empty(), lambda: client.publish("news.probe", b"probe"))
        while not inbox.empty():
            inbox.get_nowait()
        await client.publish("news.c", b'{"from": "nats"}', headers={"Content-Type": "application/json"})
        delivery = await asyncio.wait_for(inbox.get(), 10)
        while delivery.metadata["#subject"] == "news.probe":
            delivery = await asyncio.wait_for(inbox.get(), 10)
        assert delivery.content == {"from": "nats"} and delivery.type_n == "application/json"
        # From lime-python on hub A to nats-py on hub C.
        async def publish():
            lime.send_command(Command("observe", "/topics/news.a", type_n="text/plain", resource="from lime"))
        # nats-py's own publications come back to it (NATS echo): only news.a is looked for.
        arrived = []

        async def publish_and_look():
            await publish()
            while not at_nats.empty():
                message = at_nats.get_nowait()
                if message.subject == "news.a":
                    arrived.append(message)
        await until(lambda: arrived, publish_and_look)
        message = arrived[0]
        assert message.data == b"from lime" and message.subject == "news.a"
        await client.close()
        await lime.send_finishing_session_async()

    run(scenario())


def test_nats_py_on_hub_c_calls_a_lime_python_service_on_hub_a(cluster):
    a, c = cluster.hubs[0], cluster.hubs[2]

    async def scenario():
        server, _, _, _ = await open_channel(a.ws_url, "adder@relay.local", "1")
        await serve_adder(server)
        client = await nats.connect(c.nats_url)
        answer = None
        while answer is None:
            try:
                answer = await client.request("adder.add", b'{"a": 2, "b": 40}', timeout=2)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)
        assert answer.data == b'{"sum":42}'
        await client.close()
        await server.send_finishing_session_async()

    run(scenario())


def test_a_queue_group_over_three_hubs_gets_every_message_exactly_once(cluster):
    async def scenario():
        received = []
        members = []
        for index, hub in enumerate(cluster.hubs):
            client = await nats.connect(hub.nats_url)

            async def note(message, index=index):
                received.append((index, message.data.decode()))

            await client.subscribe("work.*", queue="crew", cb=note)
            await settled(client)
            members.append(client)
        publisher = await nats.connect(cluster.nodes[1].url)
        await until(lambda: {index for index, text in received if text == "probe"} == {0, 1, 2},
                    lambda: publisher.publish("work.probe", b"probe"))
        before = len(received)
        for n in range(150):
            await publisher.publish("work.item", f"job {n}".encode())
        await publisher.flush()

        async def all_in():
            while len([r for r in received[before:] if r[1] != "probe"]) < 150:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_in(), 20)
        jobs = [r for r in received[before:] if r[1] != "probe"]
        assert len(jobs) == 150 and len({text for _, text in jobs}) == 150
        assert len({index for index, _ in jobs}) >= 2
        for client in members + [publisher]:
            await client.close()

    run(scenario())


def test_lime_python_nodes_on_two_hubs_exchange_messages_and_receipts(cluster):
    a, b = cluster.hubs[0], cluster.hubs[1]

    async def scenario():
        alice, _, alice_inbox, alice_receipts = await open_channel(a.ws_url, "alice@relay.local", "a")
        bob, _, bob_inbox, _ = await open_channel(b.ws_url, "bob@relay.local", "b")

        async def send():
            alice.send_message(Message("text/plain", "hello bob", to="bob@relay.local/b"))
        await until(lambda: not bob_inbox.empty(), send)
        at_bob = await bob_inbox.get()
        assert at_bob.content == "hello bob" and at_bob.from_n == "alice@relay.local/a"
        # lime-python's `received` receipt (addressed to itself) crosses back to alice.
        receipt = await asyncio.wait_for(alice_receipts.get(), 10)
        assert receipt.event == "received"
        bob.send_message(Message("text/plain", "hello alice", to="alice@relay.local/a"))
        assert (await asyncio.wait_for(alice_inbox.get(), 10)).content == "hello alice"
        await alice.send_finishing_session_async()
        await bob.send_finishing_session_async()

    run(scenario())
