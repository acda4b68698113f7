"""Starts real Relay hubs for the interop tests and offers the pieces the tests share."""
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELAY_BIN = os.environ.get("RELAY_BIN", str(ROOT / ".build" / "debug" / "relay"))


def log_level_arguments():
    """`RELAY_TEST_LOG=debug` runs the test hubs at that log level (printed when a hub fails)."""
    level = os.environ.get("RELAY_TEST_LOG")
    return ["--log-level", level] if level else []


class Hub:
    """A `relay serve` process on free loopback ports, and what it logged."""

    def __init__(self, *extra_args, data=None):
        # A data directory made here is removed on stop; one passed in belongs to the test.
        self._owns_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="relay-data-")
        self.process = subprocess.Popen(
            [RELAY_BIN, "serve", "--ws", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--data", self.data, *log_level_arguments(), *extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        self.ws_url = None
        self.wss_url = None
        self.tcp_url = None
        self.nats_url = None
        self.http_url = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(30):
            self.process.kill()
            raise RuntimeError("the hub did not start: " + "".join(self.log))

    def _read_log(self):
        for line in self.process.stderr:
            self.log.append(line)
            if match := re.search(r"listening on (ws://[^\s\"]+)", line):
                self.ws_url = match.group(1)
            if match := re.search(r"listening on (?:\S+ and )?(wss://[^\s\"]+)", line):
                self.wss_url = match.group(1)
            if match := re.search(r"listening on (tcp://[^\s\"]+)", line):
                self.tcp_url = match.group(1)
            if match := re.search(r"listening on (nats://[^\s\"]+)", line):
                self.nats_url = match.group(1)
            if match := re.search(r"monitoring listening on (http://[^\s\"]+)", line):
                self.http_url = match.group(1)
            if (self.ws_url or self.wss_url) and self.tcp_url and self.nats_url and self.http_url:
                self._ready.set()

    @property
    def tcp_host_port(self):
        host, port = self.tcp_url[len("tcp://"):].rsplit(":", 1)
        return host, int(port)

    def stop(self):
        """SIGTERM, as an operator would; returns the exit code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    return self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    raise
            return self.process.returncode
        finally:
            if self._owns_data and self.process.poll() is not None:
                shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def hub():
    instance = Hub()
    yield instance
    code = instance.stop()
    assert code == 0, "".join(instance.log)


def relay(*args, timeout=20):
    """Runs a relay client command; returns the completed process."""
    return subprocess.run([RELAY_BIN, *args], capture_output=True, text=True, timeout=timeout)


class RelayListener:
    """`relay listen` in the background, ready once it has said where it listens."""

    def __init__(self, server, identity, count):
        self.process = subprocess.Popen(
            [RELAY_BIN, "listen", "--server", server, "--identity", identity, "--count", str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stderr.readline()
        assert "listening as" in line, line + self.process.stderr.read()

    def lines(self, timeout=20):
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err
        return [line for line in out.splitlines() if line]


async def settled(*clients):
    """Returns once the hub has read everything these nats-py clients sent. nats-py 2.16 writes a
    flush's PING straight to the socket, ahead of commands still queued for its flusher task (a SUB
    just made): one flush can come back before the hub has the SUB. The second PING follows them."""
    for client in clients:
        await client.flush()
        await client.flush()


def run(coroutine, timeout=30):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))
