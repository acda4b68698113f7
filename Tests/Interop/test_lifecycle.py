"""SIGTERM's drain with third-party clients connected: nats-py is told (lame-duck mode) and its
request in flight is answered, lime-python's session is finished, and the hub exits 0."""
import asyncio
import json
import signal

import nats
import websockets

from conftest import Hub, run
from test_lime_python import open_channel


async def lime_instance(url, name):
    """A raw LIME session serving service `name`; returns the socket once registered."""
    ws = await websockets.connect(url, subprotocols=["lime"])
    await ws.send('{"state":"new"}')
    session = json.loads(await ws.recv())
    await ws.send(json.dumps({"id": session["id"], "from": f"{name}@relay.local/1", "state": "authenticating", "scheme": "guest"}))
    assert json.loads(await ws.recv())["state"] == "established"
    await ws.send(json.dumps({"id": "r1", "method": "set", "uri": f"/services/{name}", "type": "application/json",
                              "resource": {"methods": [{"name": "work"}]}}))
    assert json.loads(await ws.recv())["status"] == "success"
    return ws


def test_sigterm_drains_with_nats_py_and_lime_python_connected():
    hub = Hub("--drain-timeout", "20")

    async def scenario():
        told = asyncio.get_running_loop().create_future()

        async def lame_duck():
            if not told.done():
                told.set_result(True)

        client = await nats.connect(hub.nats_url, lame_duck_mode_cb=lame_duck, allow_reconnect=False)
        channel, _, _, _ = await open_channel(hub.ws_url, "stayer@relay.local", "1")
        closed = asyncio.get_running_loop().create_future()
        channel.transport.on_close = lambda: closed.done() or closed.set_result(channel.state)
        instance = await lime_instance(hub.ws_url, "slow")
        request = asyncio.create_task(client.request("slow.work", b"{}", timeout=20))
        command = json.loads(await asyncio.wait_for(instance.recv(), 10))
        assert command["method"] == "get" and command["uri"] == "/services/slow/work"

        hub.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(told, 10)
        # LIME sessions are told too, with a one-way observe (lime-python's channel ignores it).
        notice = json.loads(await asyncio.wait_for(instance.recv(), 10))
        assert notice["method"] == "observe" and notice["uri"] == "/relay/lame-duck", notice
        # Answered during the drain, not cut.
        await instance.send(json.dumps({"id": command["id"], "method": "get", "status": "success",
                                        "type": "application/json", "resource": {"done": True}}))
        reply = await asyncio.wait_for(request, 10)
        assert json.loads(reply.data) == {"done": True}
        # Then the LIME sessions are finished and the hub exits cleanly.
        assert await asyncio.wait_for(closed, 10) is not None
        code = await asyncio.to_thread(hub.process.wait, 25)
        assert code == 0, "".join(hub.log)
        await instance.close()
        await client.close()

    try:
        run(scenario(), timeout=60)
    finally:
        hub.stop()


def test_sighup_reloads_the_configuration_file_and_a_new_user_can_sign_in(tmp_path):
    import os
    import time
    from conftest import relay

    (password_hash,) = relay("passwd", "s3cret").stdout.split()
    config = tmp_path / "relay.json"
    config.write_text(json.dumps({"guest": False, "limits": {"authFailureDelaySeconds": 0},
                                  "users": [{"identity": "alice@relay.local", "password": password_hash}]}))
    hub = Hub("--config", str(config))

    async def sign_in(user):
        return await nats.connect(hub.nats_url, user=user, password="s3cret", allow_reconnect=False, max_reconnect_attempts=0)

    async def scenario():
        alice = await sign_in("alice")
        try:
            await sign_in("bob")
            raise AssertionError("bob signed in before he was configured")
        except Exception as error:
            assert "authorization violation" in str(error).lower() or "Authorization" in repr(error), repr(error)
        config.write_text(json.dumps({"guest": False, "limits": {"authFailureDelaySeconds": 0},
                                      "users": [{"identity": "alice@relay.local", "password": password_hash},
                                                {"identity": "bob@relay.local", "password": password_hash}]}))
        hub.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any("configuration reloaded" in line for line in hub.log):
            assert time.monotonic() < deadline, "".join(hub.log)
            await asyncio.sleep(0.05)
        bob = await sign_in("bob")
        # Alice's connection was not dropped.
        await alice.flush(timeout=5)
        await bob.close()
        await alice.close()

    try:
        run(scenario())
    finally:
        assert hub.stop() == 0, "".join(hub.log)
