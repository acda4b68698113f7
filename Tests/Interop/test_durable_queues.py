"""Durable queues from the command line, and what a hub confirmed surviving kill -9."""
import collections
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time

from conftest import RELAY_BIN, Hub, relay, settled


def test_queue_commands(hub):
    added = relay("queue", "add", "orders", "--subjects", "orders.>,invoices.*", "--max-deliver", "3", "--ack-wait", "2s", "--server", hub.tcp_url)
    assert added.returncode == 0, added.stderr
    published = relay("pub", "orders.new", "order {{i}}", "--count", "4", "--confirm", "--server", hub.ws_url)
    assert published.stdout.strip() == "confirmed 4 of 4"
    listing = relay("queue", "ls", "--server", hub.tcp_url)
    assert "orders  subjects: orders.>,invoices.*  messages: 4" in listing.stdout
    consumed = relay("consume", "orders", "--ack", "--count", "4", "--server", hub.tcp_url)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"[#{n}] orders.new: order {n}" for n in range(1, 5)]
    info = json.loads(relay("queue", "info", "orders", "--server", hub.tcp_url).stdout)
    assert info["acknowledged"] == 4 and info["maxDeliveries"] == 3 and info["ackWaitMilliseconds"] == 2000
    assert relay("queue", "rm", "orders", "--server", hub.tcp_url).returncode == 0
    missing = relay("queue", "info", "orders", "--server", hub.tcp_url)
    assert missing.returncode != 0 and "No queue 'orders'" in missing.stderr


def test_confirmed_messages_survive_kill_9():
    data = tempfile.mkdtemp(prefix="relay-crash-")
    first = Hub(data=data)
    assert relay("queue", "add", "crash", "--subjects", "crash.>", "--max-deliver", "5", "--server", first.tcp_url).returncode == 0
    total = 5000
    publisher = subprocess.Popen(
        [RELAY_BIN, "pub", "crash.x", "m{{i}}", "--count", str(total), "--confirm", "--server", first.tcp_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Let part of the stream be confirmed, then kill the hub without warning.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = relay("queue", "info", "crash", "--server", first.tcp_url)
        if info.returncode == 0 and json.loads(info.stdout)["messages"] >= 300:
            break
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    out, err = publisher.communicate(timeout=30)
    match = re.search(r"confirmed (\d+) of 5000", out)
    assert match, out + err
    confirmed = int(match.group(1))
    assert 300 <= confirmed < total, "the kill came part way"

    second = Hub(data=data)
    try:
        consumed = relay("consume", "crash", "--ack", "--credit", "100", "--timeout", "3", "--server", second.tcp_url, timeout=120)
        assert consumed.returncode == 0, consumed.stderr
        seen = collections.Counter()
        for line in consumed.stdout.splitlines():
            payload = line.split(": ", 1)[1].split(" (delivery")[0]
            seen[payload] += 1
        # Every confirmed message is there (at least once), none more often than the maximum.
        missing = [n for n in range(1, confirmed + 1) if seen[f"m{n}"] == 0]
        assert missing == [], f"{len(missing)} confirmed messages lost, first {missing[:5]}"
        assert max(seen.values()) <= 5
    finally:
        code = second.stop()
        shutil.rmtree(data, ignore_errors=True)
        assert code == 0


def test_nats_clients_consume_and_acknowledge_with_jetstream_bodies(hub):
    import asyncio
    import nats

    from conftest import run

    assert relay("queue", "add", "jobs", "--subjects", "jobs.*", "--ack-wait", "30s", "--server", hub.tcp_url).returncode == 0
    published = relay("pub", "jobs.new", "job {{i}}", "--count", "3", "--confirm", "--server", hub.ws_url)
    assert published.stdout.strip() == "confirmed 3 of 3"

    async def scenario():
        nc = await nats.connect(hub.nats_url)
        sub = await nc.subscribe("$RELAY.QUEUE.jobs")
        first = await sub.next_msg(timeout=5)
        assert first.data == b"job 1" and first.reply.startswith("$RELAY.ACK.jobs.")
        await nc.publish(first.reply, b"+ACK")
        second = await sub.next_msg(timeout=5)
        await nc.publish(second.reply, b"-NAK")
        third = await sub.next_msg(timeout=5)
        await nc.publish(third.reply, b"+TERM not for me")
        again = await sub.next_msg(timeout=5)
        assert again.data == b"job 2", "the nak'd message comes back"
        await nc.publish(again.reply, b"+ACK")
        await settled(nc)
        await nc.close()

    run(scenario())
    info = json.loads(relay("queue", "info", "jobs", "--server", hub.tcp_url).stdout)
    assert info["messages"] == 0 and info["acknowledged"] == 2 and info["deadLettered"] == 1 and info["redelivered"] == 1
