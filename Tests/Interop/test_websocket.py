"""The hub's WebSocket layer (its own RFC 6455 framing) against the `websockets` library and raw bytes."""
import asyncio
import base64
import hashlib
import json
import os

import websockets

from conftest import run


def test_the_lime_subprotocol_is_echoed_and_a_client_without_one_is_served(hub):
    async def scenario():
        async with websockets.connect(hub.ws_url, subprotocols=["lime"]) as ws:
            assert ws.subprotocol == "lime"
            await ws.send('{"state":"new"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["state"] == "authenticating"
        async with websockets.connect(hub.ws_url) as ws:
            assert ws.subprotocol is None
            await ws.send('{"state":"new"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["state"] == "authenticating"

    run(scenario())


def test_pings_are_answered_and_fragmented_envelopes_are_joined(hub):
    async def scenario():
        async with websockets.connect(hub.ws_url, subprotocols=["lime"]) as ws:
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            # One envelope in three fragments (websockets sends an iterable as a fragmented message).
            await ws.send(['{"st', 'ate":', '"new"}'])
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["state"] == "authenticating"

    run(scenario())


async def raw_upgrade(url):
    """Opens a TCP connection and upgrades it by hand; returns the streams and the response head."""
    host, port = url[len("ws://"):].split("/")[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: lime\r\n\r\n"
        ).encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    return reader, writer, head, accept


def test_the_handshake_answer_is_rfc6455s_and_an_unmasked_frame_is_a_protocol_error(hub):
    async def scenario():
        reader, writer, head, accept = await raw_upgrade(hub.ws_url)
        assert head.startswith("HTTP/1.1 101")
        headers = dict((name.lower(), value.strip()) for name, value in (line.split(":", 1) for line in head.split("\r\n")[1:] if line))
        assert headers["sec-websocket-accept"] == accept
        assert headers["sec-websocket-protocol"] == "lime"
        # A client's frame must be masked (RFC 6455 §5.1): the hub closes with 1002.
        payload = b'{"state":"new"}'
        writer.write(bytes([0x81, len(payload)]) + payload)
        first, length = await asyncio.wait_for(reader.readexactly(2), 5)
        assert first == 0x88 and length == 2
        code = int.from_bytes(await reader.readexactly(2), "big")
        assert code == 1002
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    run(scenario())


def test_a_version_other_than_13_is_not_upgraded(hub):
    async def scenario():
        host, port = hub.ws_url[len("ws://"):].split("/")[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
            ).encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        assert not head.startswith("HTTP/1.1 101"), head
        writer.close()

    run(scenario())
