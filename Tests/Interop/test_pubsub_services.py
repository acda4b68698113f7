"""lime-python subscribing, publishing and calling a service through the documented LIME commands,
and the relay command line's pub/sub and service tools, against a real hub."""
import asyncio
import subprocess

from lime_python import Command

from conftest import RELAY_BIN, relay, run
from test_lime_python import open_channel


def subscribe_command(uri):
    return Command("subscribe", uri)


async def serve_adder(server):
    """Registers lime-python's `server` as the service `adder` (method `add`: a + b) and answers its calls."""
    description = {
        "description": "Adds numbers",
        "methods": [{"name": "add", "parameters": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]}],
    }
    registered = await server.process_command_async(Command("set", "/services/adder", resource=description), 5)
    assert registered.status == "success"

    def serve(command):
        if command.uri == "/services/adder/add" and not command.status:
            reply = Command(command.method, status="success", type_n="application/json",
                            resource={"sum": command.resource["a"] + command.resource["b"]})
            reply.id = command.id
            reply.to = command.from_n
            server.send_command(reply)

    server.on_command = serve


def test_lime_python_subscribes_and_publishes(hub):
    async def scenario():
        subscriber, _, inbox, _ = await open_channel(hub.ws_url, "sub@relay.local", "1")
        publisher, _, _, _ = await open_channel(hub.ws_url, "pub@relay.local", "1")
        response = await subscriber.process_command_async(Command("subscribe", "/topics/orders.*"), 5)
        assert response.status == "success"
        confirmed = await publisher.process_command_async(
            Command("set", "/topics/orders.created", type_n="application/json", resource={"id": 7}), 5
        )
        assert confirmed.status == "success" and confirmed.resource == {"delivered": 1}
        delivery = await asyncio.wait_for(inbox.get(), 10)
        assert delivery.content == {"id": 7}
        assert delivery.type_n == "application/json"
        assert delivery.from_n == "pub@relay.local/1"
        assert delivery.metadata["#subject"] == "orders.created"
        # Fire-and-forget publication: observe.
        publisher.send_command(Command("observe", "/topics/orders.updated", type_n="text/plain", resource="changed"))
        assert (await asyncio.wait_for(inbox.get(), 10)).content == "changed"
        bad = await subscriber.process_command_async(Command("subscribe", "/topics/orders..x"), 5)
        assert bad.status == "failure" and bad.reason["code"] == 23
        await subscriber.send_finishing_session_async()
        await publisher.send_finishing_session_async()

    run(scenario())


def test_lime_python_serves_and_calls_a_service(hub):
    async def scenario():
        server, _, _, _ = await open_channel(hub.ws_url, "adder@relay.local", "1")
        caller, _, _, _ = await open_channel(hub.ws_url, "caller@relay.local", "1")
        await serve_adder(server)
        listing = await caller.process_command_async(Command("get", "/services"), 5)
        assert listing.resource["services"][0]["name"] == "adder"
        response = await caller.process_command_async(Command("get", "/services/adder/add", resource={"a": 2, "b": 3}), 5)
        assert response.status == "success" and response.resource == {"sum": 5}
        invalid = await caller.process_command_async(Command("get", "/services/adder/add", resource={"a": "two"}), 5)
        assert invalid.status == "failure" and invalid.reason["code"] == 64
        missing = await caller.process_command_async(Command("get", "/services/nobody/add"), 5)
        assert missing.status == "failure" and missing.reason["code"] == 42
        await server.send_finishing_session_async()
        await caller.send_finishing_session_async()

    run(scenario())


def background(*args):
    """A relay command in the background that reports on stderr when it is ready."""
    process = subprocess.Popen([RELAY_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    assert "relay" in line, line + process.stderr.read()
    return process


def test_command_line_pub_sub_with_a_queue_group(hub):
    members = [background("sub", "jobs.*", "--queue", "workers", "--count", "5", "--server", hub.ws_url) for _ in range(2)]
    watcher = background("sub", "jobs.>", "--count", "10", "--server", hub.tcp_url)
    result = relay("pub", "jobs.new", "job {{i}}", "--count", "10", "--confirm", "--server", hub.tcp_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("confirmed 10 of 10")
    seen = []
    for member in members:
        out, err = member.communicate(timeout=20)
        assert member.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 5
        seen += [line.split(": ", 1)[1] for line in lines]
    assert sorted(seen) == sorted(f"job {i}" for i in range(1, 11))
    out, _ = watcher.communicate(timeout=20)
    assert out.splitlines()[0] == "[#1] jobs.new: job 1"


def test_command_line_reply_request_and_services(hub):
    replier = background("reply", "echo", "--count", "1", "--server", hub.ws_url)
    listing = relay("services", "--server", hub.tcp_url)
    assert listing.returncode == 0 and "echo" in listing.stdout and "instances: 1" in listing.stdout
    result = relay("request", "echo", "/greet", '{"name":"relay"}', "--server", hub.tcp_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"method":"greet","params":{"name":"relay"}}'
    replier.communicate(timeout=20)
    failed = relay("request", "missing", "/x", "--server", hub.tcp_url)
    assert failed.returncode != 0
    assert "No instance of service 'missing'" in failed.stderr
