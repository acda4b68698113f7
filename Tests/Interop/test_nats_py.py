"""nats-py, unmodified, against the hub's NATS listener; and NATS to LIME and back."""
import asyncio
import json
import os
import socket
import tempfile

import nats
import pytest
from nats.errors import NoRespondersError

from conftest import Hub, relay, run, settled


def collect(into, field="data"):
    """A subscription callback (nats-py wants a coroutine) that appends a field of each message."""
    async def callback(msg):
        into.append(getattr(msg, field))
    return callback


async def connect(hub, **options):
    return await nats.connect(hub.nats_url, **options)


def raw_connection(hub):
    host, port = hub.nats_url[len("nats://"):].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    info = sock.recv(4096)
    assert info.startswith(b"INFO {")
    return sock


def read_until_closed(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_pub_sub_in_order_with_wildcards(hub):
    async def scenario():
        nc = await connect(hub)
        star, rest = [], []
        done = asyncio.Event()

        async def on_rest(msg):
            rest.append(msg.data)
            if len(rest) == 1000 and len(star) == 500:
                done.set()

        async def on_star(msg):
            star.append(msg.subject)
            if len(rest) == 1000 and len(star) == 500:
                done.set()

        await nc.subscribe("orders.*", cb=on_star)
        await nc.subscribe("orders.>", cb=on_rest)
        for n in range(1000):
            await nc.publish("orders.eu" if n % 2 else "orders.eu.created", str(n).encode())
        await asyncio.wait_for(done.wait(), 20)
        assert rest == [str(n).encode() for n in range(1000)]
        assert len(star) == 500 and set(star) == {"orders.eu"}
        await nc.close()

    run(scenario())


def test_publications_cut_anywhere_across_reads_arrive_whole_and_in_order(hub):
    """The hub forwards a PUB from the bytes it read, and completes one cut across reads first:
    every payload, reply and header must come through exactly, whatever the cuts."""
    expected, stream = [], b"CONNECT {\"headers\":true,\"verbose\":false}\r\n"
    for n in range(1500):
        size = 70_000 if n % 250 == 7 else (n * 37) % 3000
        payload = bytes((n + i) % 251 for i in range(size))
        subject = "flow.a" if n % 2 else f"flow.b.{n}"
        reply = f"r.{n}" if n % 3 == 0 else None
        if n % 10 == 5:
            headers = f"NATS/1.0\r\nN: {n}\r\n\r\n".encode()
            stream += f"HPUB {subject} {reply + ' ' if reply else ''}{len(headers)} {len(headers) + size}\r\n".encode() + headers + payload + b"\r\n"
        else:
            stream += f"PUB {subject} {reply + ' ' if reply else ''}{size}\r\n".encode() + payload + b"\r\n"
        expected.append((subject, reply or "", payload))
    stream += b"PING\r\n"

    async def scenario():
        nc = await connect(hub)
        received = []
        done = asyncio.Event()

        async def on_message(msg):
            received.append((msg.subject, msg.reply, msg.data))
            if len(received) == len(expected):
                done.set()

        await nc.subscribe("flow.>", cb=on_message)
        await settled(nc)
        sock = raw_connection(hub)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the cuts reach the hub as sent
        sizes, offset, turn = [1, 13, 4093, 65_537, 300, 2], 0, 0
        while offset < len(stream):
            sock.sendall(stream[offset:offset + sizes[turn % len(sizes)]])
            offset += sizes[turn % len(sizes)]
            turn += 1
        answer = b""
        while b"PONG" not in answer:
            answer += await asyncio.get_running_loop().run_in_executor(None, sock.recv, 4096)
        await asyncio.wait_for(done.wait(), 30)
        assert len(received) == len(expected)
        for n, (got, want) in enumerate(zip(received, expected)):
            assert got == want, f"message {n}"
        sock.close()
        await nc.close()

    run(scenario())


def test_queue_groups_share_the_work(hub):
    async def scenario():
        nc = await connect(hub)
        counts = [0, 0, 0]
        for index in range(3):
            async def member(msg, index=index):
                counts[index] += 1
            await nc.subscribe("jobs.*", queue="workers", cb=member)
        for n in range(300):
            await nc.publish(f"jobs.{n}", b"job")
        await settled(nc)
        for _ in range(100):
            if sum(counts) == 300:
                break
            await asyncio.sleep(0.05)
        assert counts == [100, 100, 100]
        await nc.close()

    run(scenario())


def test_request_reply_headers_and_no_responders(hub):
    async def scenario():
        responder = await connect(hub)
        requester = await connect(hub)

        async def echo(msg):
            await responder.publish(msg.reply, b"echo:" + msg.data, headers={"Seen": (msg.headers or {}).get("Trace", "-")})

        await responder.subscribe("svc.echo", cb=echo)
        await settled(responder)
        reply = await requester.request("svc.echo", b"hi", timeout=5, headers={"Trace": "t-1"})
        assert reply.data == b"echo:hi"
        assert reply.headers == {"Seen": "t-1"}
        with pytest.raises(NoRespondersError):
            await requester.request("nobody.home", b"x", timeout=5)
        await responder.close()
        await requester.close()

    run(scenario())


def test_multi_valued_headers_survive(hub):
    host, port = hub.nats_url[len("nats://"):].rsplit(":", 1)
    sub = raw_connection(hub)
    sub.sendall(b'CONNECT {"headers":true,"verbose":false}\r\nSUB h 1\r\nPING\r\n')
    assert sub.recv(1024) == b"PONG\r\n"
    pub = raw_connection(hub)
    headers = b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n"
    pub.sendall(b'CONNECT {"headers":true}\r\nHPUB h %d %d\r\n%sxy\r\nPING\r\n' % (len(headers), len(headers) + 2, headers))
    assert pub.recv(1024) == b"PONG\r\n"
    message = sub.recv(4096)
    assert message.startswith(b"HMSG h 1 ")
    assert b"A: 1, 2\r\n" in message and message.endswith(b"xy\r\n")
    sub.close()
    pub.close()


def test_auto_unsubscribe_and_echo_off(hub):
    async def scenario():
        nc = await connect(hub, no_echo=True)
        other = await connect(hub)
        received = []
        sub = await other.subscribe("ticks", cb=collect(received))
        await sub.unsubscribe(limit=3)
        mine = []
        await nc.subscribe("ticks", cb=collect(mine))
        # Both subscriptions are at the hub before anything is published.
        await settled(other)
        await settled(nc)
        for n in range(10):
            await nc.publish("ticks", str(n).encode())
        await settled(nc)
        await settled(other)
        await asyncio.sleep(0.3)
        assert received == [b"0", b"1", b"2"]
        assert mine == [], "echo off: a connection does not hear itself"
        await nc.close()
        await other.close()

    run(scenario())


def test_a_512_kib_binary_payload(hub):
    async def scenario():
        nc = await connect(hub)
        payload = bytes(range(256)) * 2048
        sub = await nc.subscribe("blob")
        await nc.publish("blob", payload)
        msg = await sub.next_msg(timeout=10)
        assert msg.data == payload
        await nc.close()

    run(scenario())


def test_garbage_gets_err_and_others_carry_on(hub):
    async def scenario():
        nc = await connect(hub)
        sub = await nc.subscribe("still.here")
        sock = raw_connection(hub)
        sock.sendall(b"HELLO WORLD\r\n")
        assert read_until_closed(sock) == b"-ERR 'Unknown Protocol Operation'\r\n"
        too_big = raw_connection(hub)
        too_big.sendall(b"PUB x 99999999\r\n")
        assert read_until_closed(too_big) == b"-ERR 'Maximum Payload Violation'\r\n"
        before = await nc.subscribe("before.error")
        await settled(nc)
        mixed = raw_connection(hub)
        # What came before the bad operation, in the same send, is still published.
        mixed.sendall(b"CONNECT {}\r\nPUB before.error 3\r\nyes\r\nHELLO\r\n")
        assert read_until_closed(mixed).endswith(b"-ERR 'Unknown Protocol Operation'\r\n")
        assert (await before.next_msg(timeout=5)).data == b"yes"
        invalid = raw_connection(hub)
        invalid.sendall(b"SUB a..b 1\r\nPING\r\n")
        assert invalid.recv(1024) == b"-ERR 'Invalid Subject'\r\nPONG\r\n"
        invalid.close()
        await nc.publish("still.here", b"yes")
        assert (await sub.next_msg(timeout=5)).data == b"yes"
        await nc.close()

    run(scenario())


def test_a_fanned_out_message_is_rendered_for_each_subscription(hub):
    """The hub renders a message once for subscribers that would get the same bytes; each still
    gets its own sid, and headers only where it enabled them."""
    def subscriber(connect, subs):
        sock = raw_connection(hub)
        sock.sendall(connect + b"".join(subs) + b"PING\r\n")
        assert sock.recv(1024) == b"PONG\r\n"
        return sock

    def read_exactly(sock, size):
        data = b""
        while len(data) < size:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
        return data

    with_headers = subscriber(b'CONNECT {"headers":true}\r\n', [b"SUB fan.x 1\r\n"])
    plain = subscriber(b"CONNECT {}\r\n", [b"SUB fan.x 1\r\n"])
    other_sid = subscriber(b"CONNECT {}\r\n", [b"SUB fan.x 7\r\n"])
    twice = subscriber(b"CONNECT {}\r\n", [b"SUB fan.* 1\r\n", b"SUB fan.x 2\r\n"])
    publisher = raw_connection(hub)
    header = b"NATS/1.0\r\nK: v\r\n\r\n"
    publisher.sendall(
        b'CONNECT {"headers":true}\r\nPUB fan.x 2\r\nhi\r\n'
        + b"HPUB fan.x %d %d\r\n" % (len(header), len(header) + 2) + header + b"yo\r\nPING\r\n")
    assert publisher.recv(1024) == b"PONG\r\n"
    hmsg = b"HMSG fan.x 1 %d %d\r\n" % (len(header), len(header) + 2) + header + b"yo\r\n"
    assert read_exactly(with_headers, len(b"MSG fan.x 1 2\r\nhi\r\n") + len(hmsg)) == b"MSG fan.x 1 2\r\nhi\r\n" + hmsg
    assert read_exactly(plain, 38) == b"MSG fan.x 1 2\r\nhi\r\nMSG fan.x 1 2\r\nyo\r\n"
    assert read_exactly(other_sid, 38) == b"MSG fan.x 7 2\r\nhi\r\nMSG fan.x 7 2\r\nyo\r\n"
    both = read_exactly(twice, 76)
    assert sorted(both[i:i + 19] for i in range(0, 76, 19)) == sorted(
        [b"MSG fan.x 1 2\r\nhi\r\n", b"MSG fan.x 2 2\r\nhi\r\n", b"MSG fan.x 1 2\r\nyo\r\n", b"MSG fan.x 2 2\r\nyo\r\n"])
    assert both.index(b"hi") < both.rindex(b"hi") < both.index(b"yo")
    for sock in (with_headers, plain, other_sid, twice, publisher):
        sock.close()


def test_nats_to_lime_and_back(hub):
    async def scenario():
        nc = await connect(hub)
        sub = await nc.subscribe("from.lime")
        await settled(nc)
        # LIME publishes (relay pub over WebSocket), NATS receives.
        result = await asyncio.to_thread(relay, "pub", "from.lime", '{"n":1}', "--confirm", "--server", hub.ws_url)
        assert result.returncode == 0 and "confirmed 1 of 1" in result.stdout, result.stderr
        msg = await sub.next_msg(timeout=5)
        assert json.loads(msg.data) == {"n": 1}
        assert msg.headers == {"Content-Type": "application/json"}
        # NATS publishes, LIME receives (relay sub over TCP).
        proc = await asyncio.create_subprocess_exec(
            os.environ.get("RELAY_BIN", ".build/debug/relay"), "sub", "from.nats", "--count", "2", "--server", hub.tcp_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert b"subscribed" in await proc.stderr.readline()
        await nc.publish("from.nats", b"plain text")
        await nc.publish("from.nats", b'{"ok":true}', headers={"Content-Type": "application/json"})
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert out.decode().splitlines() == ["[#1] from.nats: plain text", '[#2] from.nats: {"ok":true}']
        await nc.close()

    run(scenario())


def test_authorization_with_configured_users():
    hashed = relay("passwd", "s3cret").stdout.strip()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
        json.dump({"guest": False, "users": [{"identity": "alice@relay.local", "password": hashed}]}, config)
    secured = Hub("--config", config.name)
    try:
        async def scenario():
            nc = await nats.connect(secured.nats_url, user="alice", password="s3cret")
            sub = await nc.subscribe("private")
            await nc.publish("private", b"ok")
            assert (await sub.next_msg(timeout=5)).data == b"ok"
            await nc.close()
            sock = raw_connection(secured)
            sock.sendall(b'CONNECT {"user":"alice","pass":"wrong"}\r\n')
            assert read_until_closed(sock) == b"-ERR 'Authorization Violation'\r\n"
            sock = raw_connection(secured)
            sock.sendall(b"SUB x 1\r\n")
            assert read_until_closed(sock) == b"-ERR 'Authorization Violation'\r\n"

        run(scenario())
    finally:
        assert secured.stop() == 0
        os.unlink(config.name)


def test_a_connection_that_never_answers_pings_is_stale():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
        json.dump({"natsOptions": {"pingIntervalSeconds": 0.2, "maxPingsOutstanding": 2}}, config)
    quick = Hub("--config", config.name)
    try:
        sock = raw_connection(quick)
        sock.sendall(b"CONNECT {}\r\n")
        assert read_until_closed(sock) == b"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n"
    finally:
        assert quick.stop() == 0
        os.unlink(config.name)


def test_a_nats_request_reaches_a_lime_service(hub):
    import subprocess
    from conftest import RELAY_BIN

    replier = subprocess.Popen([RELAY_BIN, "reply", "echo", "--count", "1", "--server", hub.ws_url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "serving echo" in replier.stderr.readline()

    async def scenario():
        nc = await connect(hub)
        reply = await nc.request("echo.greet", b'{"name":"nats"}', timeout=5)
        assert json.loads(reply.data) == {"method": "greet", "params": {"name": "nats"}}
        assert reply.headers == {"Content-Type": "application/json"}
        await nc.close()

    run(scenario())
    replier.communicate(timeout=10)


def test_a_lime_request_reaches_a_nats_responder(hub):
    from lime_python import Command
    from test_lime_python import open_channel

    async def scenario():
        nc = await connect(hub)

        async def clock(msg):
            await nc.publish(msg.reply, b'{"time":"noon","asked":' + msg.data + b"}", headers={"Content-Type": "application/json"})

        await nc.subscribe("time.now", cb=clock)
        await settled(nc)
        channel, _, _, _ = await open_channel(hub.ws_url, "asker@relay.local", "1")
        response = await channel.process_command_async(Command("get", "/topics/time.now", type_n="application/json", resource={"tz": "utc"}), 5)
        assert response.status == "success"
        assert response.resource == {"time": "noon", "asked": {"tz": "utc"}}
        nobody = await channel.process_command_async(Command("get", "/topics/time.never", resource="x"), 5)
        assert nobody.status == "failure" and nobody.reason["code"] == 42
        await channel.send_finishing_session_async()
        await nc.close()

    run(scenario())


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def nats_server():
    """A real nats-server (Debian's package, installed by scripts/test)."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = free_port()
    store = tempfile.mkdtemp()
    # JetStream on, for relay bench's confirmed-publish workload.
    process = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    yield f"nats://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)
    shutil.rmtree(store, ignore_errors=True)


@pytest.mark.parametrize("target", ["hub", "nats-server"])
def test_command_line_over_nats(target, hub, nats_server):
    import subprocess
    from conftest import RELAY_BIN

    server = hub.nats_url if target == "hub" else nats_server
    subscriber = subprocess.Popen([RELAY_BIN, "sub", "cli.*", "--count", "2", "--server", server],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "subscribed" in subscriber.stderr.readline()
    replier = subprocess.Popen([RELAY_BIN, "reply", "calc", "--count", "1", "--server", server],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "serving calc" in replier.stderr.readline()
    published = relay("pub", "cli.test", "n{{i}}", "--count", "2", "--confirm", "--server", server)
    assert published.returncode == 0 and published.stdout.strip() == "confirmed 2 of 2", published.stderr
    out, _ = subscriber.communicate(timeout=10)
    assert out.splitlines() == ["[#1] cli.test: n1", "[#2] cli.test: n2"]
    answered = relay("request", "calc", "/add", '{"a":1}', "--server", server)
    assert answered.returncode == 0 and json.loads(answered.stdout) == {"method": "add", "params": {"a": 1}}, answered.stderr
    replier.communicate(timeout=10)
    missing = relay("request", "nobody", "/x", "--server", server, "--timeout", "2")
    assert missing.returncode != 0 and "No responders" in missing.stderr


def test_a_slow_consumer_is_told_and_closed_while_others_carry_on():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
        json.dump({"limits": {"maxPendingBytes": 65536}}, config)
    small = Hub("--config", config.name)
    try:
        stalled = raw_connection(small)
        stalled.sendall(b"CONNECT {}\r\nSUB big 1\r\nPING\r\n")
        assert stalled.recv(1024) == b"PONG\r\n"
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        async def scenario():
            nc = await nats.connect(small.nats_url)
            healthy = await nc.subscribe("big.ok")
            chunk = b"x" * 100_000
            for _ in range(300):
                await nc.publish("big", chunk)
            await nc.publish("big.ok", b"fine")
            assert (await healthy.next_msg(timeout=10)).data == b"fine"
            await nc.close()

        run(scenario())
        received = read_until_closed(stalled)
        assert received.endswith(b"-ERR 'Slow Consumer'\r\n")
        assert len(received) < 300 * 100_000
    finally:
        assert small.stop() == 0
        os.unlink(config.name)


@pytest.mark.parametrize("workload", ["pubsub", "fanout", "queue", "reqrep", "confirmed"])
def test_relay_bench_runs_against_the_hub_and_nats_server(workload, hub, nats_server):
    for server in [hub.nats_url, nats_server, hub.ws_url]:
        result = relay("bench", workload, "--count", "200", "--subscribers", "3", "--json", "--server", server, timeout=60)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        expected = 600 if workload == "fanout" else 200
        assert summary["count"] == 200 and summary["delivered"] == expected and summary["lost"] == 0, summary
        assert summary["messagesPerSecond"] > 0
        latency = summary["latencyMicroseconds"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_relay_bench_at_a_constant_rate_for_a_duration(hub):
    result = relay("bench", "pubsub", "--rate", "500", "--duration", "1", "--publishers", "2", "--json", "--server", hub.nats_url,
                   timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # Paced: no message is sent before it is due, so at most 500 in the second (plus one per
    # publisher that woke up for its last message), however fast or slow the machine is.
    assert 0 < summary["count"] <= 502 and summary["delivered"] == summary["count"] and summary["rate"] == 500, summary


def test_relay_bench_idle_holds_sessions_until_stdin_closes(hub):
    import subprocess
    from conftest import RELAY_BIN

    holder = subprocess.Popen([RELAY_BIN, "bench", "idle", "--connections", "50", "--server", hub.ws_url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert json.loads(holder.stdout.readline()) == {"connected": 50}
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


def test_jetstream_publish_is_acknowledged_once_stored(hub):
    """nats-py's JetStream API: a stream is a durable queue; a publish is answered with its sequence."""
    async def scenario():
        nc = await connect(hub)
        js = nc.jetstream()
        info = await js.add_stream(name="orders", subjects=["orders.*"])
        assert info.config.name == "orders" and info.state.messages == 0
        acks = [await js.publish("orders.new", f"order {n}".encode()) for n in range(3)]
        assert [(ack.stream, ack.seq) for ack in acks] == [("orders", 1), ("orders", 2), ("orders", 3)]
        # The same stream again is fine; the stored messages are consumed with acknowledgements.
        assert (await js.add_stream(name="orders", subjects=["orders.*"])).state.messages == 3
        consumer = await nc.subscribe("$RELAY.QUEUE.orders")
        for n in range(3):
            message = await consumer.next_msg(timeout=5)
            assert message.data == f"order {n}".encode()
            await message.respond(b"+ACK")
        await settled(nc)
        # A plain publish (no reply subject) is stored too, without an answer.
        await nc.publish("orders.new", b"order 3")
        assert (await consumer.next_msg(timeout=5)).data == b"order 3"
        await nc.close()

    run(scenario())


def test_a_hub_on_one_event_loop_serves_as_usual():
    """`relay serve --threads 1`: every connection on one loop; `--threads 0` is refused."""
    refused = relay("serve", "--threads", "0", "--ws", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--nats", "127.0.0.1:0")
    assert refused.returncode != 0 and "--threads expects a positive number" in refused.stderr
    single = Hub("--threads", "1")
    try:
        async def scenario():
            subscriber = await connect(single)
            publisher = await connect(single)
            received = []
            done = asyncio.Event()

            async def on_message(msg):
                received.append(msg.data)
                if len(received) == 500:
                    done.set()

            await subscriber.subscribe("one.loop", cb=on_message)
            await settled(subscriber)
            for n in range(500):
                await publisher.publish("one.loop", str(n).encode())
            await asyncio.wait_for(done.wait(), 20)
            assert received == [str(n).encode() for n in range(500)]
            await publisher.close()
            await subscriber.close()

        run(scenario())
    finally:
        assert single.stop() == 0
