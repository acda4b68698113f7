"""WebSocket permessage-deflate (RFC 7692): the `websockets` library against the hub, Relay's client
against a `websockets` server, and a small frame that inflates past the limit."""
import asyncio
import json
import os
import struct
import subprocess
import threading
import zlib

import pytest
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate

from conftest import RELAY_BIN, Hub, run
from test_websocket import raw_upgrade

BIG = "compressible " * 2000  # 26 KB of text, far over the threshold


@pytest.fixture
def compressing_hub():
    hub = Hub("--ws-compression")
    yield hub
    assert hub.stop() == 0, "".join(hub.log)


async def guest_session(ws, name):
    await ws.send('{"state":"new"}')
    session = json.loads(await asyncio.wait_for(ws.recv(), 5))
    await ws.send(json.dumps({"id": session["id"], "from": f"{name}@relay.local/1", "state": "authenticating", "scheme": "guest"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["state"] == "established"


def test_websockets_with_deflate_talks_compressed_to_the_hub(compressing_hub):
    async def scenario():
        async with websockets.connect(compressing_hub.ws_url, subprotocols=["lime"], compression="deflate") as ws:
            deflate = [extension for extension in ws.extensions if isinstance(extension, PerMessageDeflate)]
            assert deflate, "the hub accepted permessage-deflate"
            # The hub compresses each message on its own and asks the client to do the same.
            assert deflate[0].remote_no_context_takeover and deflate[0].local_no_context_takeover
            await guest_session(ws, "squeezed")
            await ws.send(json.dumps({"id": "s1", "method": "subscribe", "uri": "/topics/big.>?echo=true"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["status"] == "success"
            # Compressed by websockets, inflated by the hub; compressed by the hub, inflated by websockets.
            for n in range(3):
                await ws.send(json.dumps({"method": "observe", "uri": "/topics/big.text", "type": "text/plain", "resource": f"{n} {BIG}"}))
                delivery = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert delivery["content"] == f"{n} {BIG}"
            # Small messages go uncompressed, and are read all the same.
            await ws.send(json.dumps({"id": "p1", "method": "get", "uri": "/ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["status"] == "success"

    run(scenario())


def test_a_hub_without_compression_declines_the_offer(hub):
    async def scenario():
        async with websockets.connect(hub.ws_url, subprotocols=["lime"], compression="deflate") as ws:
            assert ws.extensions == []
            await guest_session(ws, "plain")

    run(scenario())


def frame(opcode, payload, rsv1=False):
    """A masked client frame."""
    mask = os.urandom(4)
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader):
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def test_a_1_kib_frame_that_inflates_past_the_limit_is_refused(compressing_hub):
    async def scenario():
        reader, writer, head, _ = await raw_upgrade_with_deflate(compressing_hub.ws_url)
        assert "permessage-deflate" in head.lower()
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        # Just past the 1 MiB limit once inflated, about 1 KiB as sent (deflate's ratio tops out near 1,000:1).
        bomb = compressor.compress(b"{" + b" " * ((1 << 20) + 24)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        bomb = bomb[:-4]  # RFC 7692: the sync flush's tail is left off
        assert len(bomb) <= 1100
        writer.write(frame(0x1, bomb, rsv1=True))
        await writer.drain()
        # The session says why, then the connection closes with 1009 (message too big).
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert opcode == 0x1
        failed = json.loads(payload)
        assert failed["state"] == "failed" and "larger than the maximum" in failed["reason"]["description"]
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
        writer.close()

    run(scenario())
    # Everyone else is still served.
    async def still_serving():
        async with websockets.connect(compressing_hub.ws_url, subprotocols=["lime"]) as ws:
            await guest_session(ws, "after")

    run(still_serving())


async def raw_upgrade_with_deflate(url):
    host, port = url[len("ws://"):].split("/")[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: lime\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    return reader, writer, head, None


class LIMEEchoServer:
    """A `websockets` server with permessage-deflate that speaks just enough LIME for Relay's
    client: guest sessions, commands answered with success, and one big message sent to each
    session once established. It records what it received and which extensions it negotiated."""

    def __init__(self):
        self.received = []
        self.extensions = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()
        assert self.ready.wait(10)

    def _serve(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await websockets.serve(self._session, "127.0.0.1", 0, subprotocols=["lime"], compression="deflate")
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _session(self, ws):
        self.extensions.append([extension.name for extension in ws.extensions])
        async for text in ws:
            envelope = json.loads(text)
            if envelope.get("state") == "new":
                await ws.send(json.dumps({"id": "s", "from": "postmaster@echo.local/hub", "state": "authenticating", "schemeOptions": ["guest"]}))
            elif envelope.get("state") == "authenticating":
                await ws.send(json.dumps({"id": "s", "from": "postmaster@echo.local/hub", "to": envelope["from"], "state": "established"}))
                await ws.send(json.dumps({"id": "m1", "from": "echo@echo.local/1", "to": envelope["from"], "type": "text/plain", "content": BIG}))
            elif envelope.get("state") == "finishing":
                await ws.send(json.dumps({"id": "s", "from": "postmaster@echo.local/hub", "state": "finished"}))
            elif "method" in envelope and "status" not in envelope:
                if envelope.get("id"):
                    await ws.send(json.dumps({"id": envelope["id"], "from": "postmaster@echo.local/hub", "method": envelope["method"], "status": "success"}))
            elif "content" in envelope:
                self.received.append(envelope["content"])

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_relays_client_compresses_with_a_websockets_server():
    server = LIMEEchoServer()
    try:
        url = f"ws://127.0.0.1:{server.port}"
        listener = subprocess.run(
            [RELAY_BIN, "listen", "--server", url, "--identity", "reader@echo.local", "--count", "1", "--compress", "--no-reconnect"],
            capture_output=True, text=True, timeout=20)
        assert listener.returncode == 0, listener.stderr
        assert json.loads(listener.stdout.splitlines()[0])["content"] == BIG, "inflated by Relay's client"
        sent = subprocess.run(
            [RELAY_BIN, "send", "--server", url, "--identity", "writer@echo.local", "--to", "echo@echo.local", "--compress", "--no-reconnect", BIG],
            capture_output=True, text=True, timeout=20)
        assert sent.returncode == 0, sent.stderr
        assert server.received == [BIG], "compressed by Relay's client, inflated by websockets"
        assert server.extensions == [["permessage-deflate"], ["permessage-deflate"]]
    finally:
        server.stop()


class GzipLIME:
    """A raw LIME session over TCP that negotiates `compression: gzip` by hand, as the LIME
    specification describes: the confirmation in plaintext, then a gzip stream each way."""

    def __init__(self, hub):
        import socket
        self.sock = socket.create_connection(hub.tcp_host_port, timeout=10)
        self.inflater = zlib.decompressobj(31)
        self.deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.plain = b""
        self.compressed = False
        self.raw_received = 0

    def send(self, envelope, raw=None):
        data = raw if raw is not None else json.dumps(envelope).encode()
        if self.compressed:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def receive(self):
        while True:
            envelope, rest = self._split(self.plain)
            if envelope is not None:
                self.plain = rest
                return envelope
            chunk = self.sock.recv(65536)
            assert chunk, "the hub closed the connection"
            self.raw_received += len(chunk)
            if self.compressed:
                chunk = self.inflater.decompress(chunk)
            self.plain += chunk

    @staticmethod
    def _split(data):
        depth, in_string, escaping = 0, False, False
        start = data.find(b"{")
        if start < 0:
            return None, data
        for index in range(start, len(data)):
            byte = data[index:index + 1]
            if in_string:
                if escaping:
                    escaping = False
                elif byte == b"\\":
                    escaping = True
                elif byte == b'"':
                    in_string = False
            elif byte == b'"':
                in_string = True
            elif byte == b"{":
                depth += 1
            elif byte == b"}":
                depth -= 1
                if depth == 0:
                    return json.loads(data[start:index + 1]), data[index + 1:]
        return None, data

    def establish(self, name):
        self.send({"state": "new"})
        offer = self.receive()
        assert offer["state"] == "negotiating" and offer["compressionOptions"] == ["none", "gzip"], offer
        self.send({"id": offer["id"], "state": "negotiating", "compression": "gzip", "encryption": "none"})
        confirmation = self.receive()
        assert confirmation["state"] == "negotiating" and confirmation["compression"] == "gzip", confirmation
        # Whatever came after the confirmation in the same read is already compressed.
        rest, self.plain = self.plain, b""
        self.compressed = True
        self.plain = self.inflater.decompress(rest) if rest else b""
        authenticating = self.receive()
        assert authenticating["state"] == "authenticating", authenticating
        self.send({"id": offer["id"], "from": f"{name}@relay.local/1", "state": "authenticating", "scheme": "guest"})
        assert self.receive()["state"] == "established"


def test_lime_gzip_session_compression_and_its_bomb(tmp_path):
    hub = Hub("--session-compression")
    try:
        session = GzipLIME(hub)
        session.establish("zipped")
        session.send({"id": "s1", "method": "subscribe", "uri": "/topics/gz.>?echo=true"})
        assert session.receive()["status"] == "success"
        before = session.raw_received
        session.send({"method": "observe", "uri": "/topics/gz.big", "type": "text/plain", "resource": BIG})
        assert session.receive()["content"] == BIG
        assert session.raw_received - before < len(BIG) / 10, "the delivery came compressed"

        # Relay's own client negotiates gzip too (--compress), and reaches the raw session.
        sent = subprocess.run(
            [RELAY_BIN, "pub", "gz.cli", BIG, "--confirm", "--compress", "--no-reconnect", "--server", hub.tcp_url],
            capture_output=True, text=True, timeout=20)
        assert sent.returncode == 0 and "confirmed 1 of 1" in sent.stdout, sent.stderr
        assert session.receive()["content"] == BIG

        # 2 MiB of spaces inside one envelope, a few KB compressed: refused at the envelope limit.
        bomb = GzipLIME(hub)
        bomb.establish("bomb")
        bomb.send(None, raw=b'{"method":"observe","uri":"/topics/x","resource":"' + b" " * (2 << 20) + b'"}')
        failed = bomb.receive()
        assert failed["state"] == "failed" and "larger than the maximum" in failed["reason"]["description"]
        # The others are still served.
        session.send({"id": "p1", "method": "get", "uri": "/ping"})
        assert session.receive()["status"] == "success"
    finally:
        assert hub.stop() == 0, "".join(hub.log)
