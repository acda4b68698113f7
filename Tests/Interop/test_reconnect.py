"""The command-line clients live through a hub restart (SIGKILL and SIGTERM): each prints one line
when it loses the hub and one when it is back, and goes on working; --no-reconnect ends instead."""
import queue
import socket
import subprocess
import threading

import pytest

from conftest import RELAY_BIN, Hub, relay


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A relay command in the background, its stdout and stderr read line by line."""

    def __init__(self, *args):
        self.process = subprocess.Popen([RELAY_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = queue.Queue(), queue.Queue()
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _pump(stream, lines):
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def next_line(self, lines, containing="", timeout=20):
        """The next line that contains `containing`; fails on end of stream or timeout."""
        while True:
            line = lines.get(timeout=timeout)
            assert line is not None, "the command ended"
            if containing in line:
                return line

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_subscribers_consumers_and_services_live_through_a_hub_restart(how, tmp_path):
    ports = {name: free_port() for name in ("ws", "tcp", "nats", "http")}
    addresses = [argument for name, port in ports.items() for argument in (f"--{name}", f"127.0.0.1:{port}")]
    data = str(tmp_path / "data")
    hub = Hub(*addresses, data=data)
    clients = []
    try:
        assert relay("queue", "add", "orders", "--subjects", "orders.>", "--server", hub.tcp_url).returncode == 0
        lime = Running("sub", "news.>", "--server", hub.tcp_url)
        nats = Running("sub", "news.>", "--server", hub.nats_url)
        consumer = Running("consume", "orders", "--ack", "--server", hub.ws_url)
        replier = Running("reply", "echo", "--server", hub.ws_url)
        clients = [lime, nats, consumer, replier]
        lime.next_line(lime.err, "subscribed")
        nats.next_line(nats.err, "subscribed")
        consumer.next_line(consumer.err, "consuming")
        replier.next_line(replier.err, "serving")
        assert relay("pub", "news.a", "before", "--confirm", "--server", hub.tcp_url).returncode == 0
        assert lime.next_line(lime.out) == "[#1] news.a: before"
        assert nats.next_line(nats.out) == "[#1] news.a: before"

        if how == "kill":
            hub.process.kill()
            hub.process.wait(10)
        else:
            assert hub.stop() == 0
        for client in clients:
            assert "reconnecting" in client.next_line(client.err, "disconnected")
        hub = Hub(*addresses, data=data)
        for client in clients:
            assert "reconnected to" in client.next_line(client.err, "reconnected")

        published = relay("pub", "news.b", "after", "--confirm", "--server", hub.tcp_url)
        assert published.returncode == 0 and "confirmed 1 of 1" in published.stdout, published.stderr
        assert lime.next_line(lime.out) == "[#2] news.b: after"
        assert nats.next_line(nats.out) == "[#2] news.b: after"
        assert relay("pub", "orders.new", "order 1", "--confirm", "--server", hub.tcp_url).returncode == 0
        assert consumer.next_line(consumer.out) == "[#1] orders.new: order 1"
        answer = relay("request", "echo", "/greet", '{"name":"again"}', "--server", hub.tcp_url)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == '{"method":"greet","params":{"name":"again"}}'
    finally:
        for client in clients:
            client.stop()
        hub.stop()


@pytest.mark.parametrize("dialect", ["tcp_url", "nats_url"])
def test_no_reconnect_ends_the_command_with_the_connection(dialect):
    hub = Hub()
    sub = Running("sub", "news.>", "--no-reconnect", "--server", getattr(hub, dialect))
    sub.next_line(sub.err, "subscribed")
    hub.process.kill()
    hub.process.wait(10)
    assert sub.process.wait(20) == 1, "a subscriber that lost its hub says so"
    sub.next_line(sub.err, "relay sub: the")  # "the session ended: ..." or "the connection is closed"
    hub.stop()
