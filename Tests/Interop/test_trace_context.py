"""W3C trace context across the dialects: a traceparent sent by nats-py arrives intact at a LIME
subscriber and on the reply; a LIME service's response carries it; with creation on, messages that
come without one get one."""
import asyncio
import json
import os
import re
import tempfile

import nats
import websockets

from conftest import Hub, run, settled
from test_lifecycle import lime_instance

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
W3C_PARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


async def lime_subscriber(url, subject):
    """A raw LIME session subscribed to `subject`."""
    ws = await websockets.connect(url, subprotocols=["lime"])
    await ws.send('{"state":"new"}')
    session = json.loads(await ws.recv())
    await ws.send(json.dumps({"id": session["id"], "from": "quoter@relay.local/1", "state": "authenticating", "scheme": "guest"}))
    assert json.loads(await ws.recv())["state"] == "established"
    await ws.send(json.dumps({"id": "s1", "method": "subscribe", "uri": f"/topics/{subject}"}))
    assert json.loads(await ws.recv())["status"] == "success"
    return ws


def test_a_nats_py_traceparent_reaches_a_lime_subscriber_intact_and_comes_back_on_the_reply(hub):
    async def scenario():
        ws = await lime_subscriber(hub.ws_url, "prices.*")
        nc = await nats.connect(hub.nats_url)
        request = asyncio.ensure_future(
            nc.request("prices.quote", b"ABC", timeout=5, headers={"traceparent": PARENT, "tracestate": STATE}))
        delivery = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert delivery["metadata"]["traceparent"] == PARENT
        assert delivery["metadata"]["tracestate"] == STATE
        # The subscriber answers on the reply subject without repeating the context.
        await ws.send(json.dumps({"method": "observe", "uri": f"/topics/{delivery['metadata']['#reply']}",
                                  "type": "text/plain", "resource": "42"}))
        reply = await request
        assert reply.data == b"42"
        assert reply.headers["traceparent"] == PARENT
        assert reply.headers["tracestate"] == STATE
        await ws.close()
        await nc.close()

    run(scenario())


def test_a_lime_services_response_to_nats_py_carries_the_requests_context(hub):
    async def scenario():
        ws = await lime_instance(hub.ws_url, "pricing")
        nc = await nats.connect(hub.nats_url)
        request = asyncio.ensure_future(nc.request("pricing.work", b'{"sku":"A"}', timeout=5, headers={"traceparent": PARENT}))
        command = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert command["metadata"]["traceparent"] == PARENT
        await ws.send(json.dumps({"id": command["id"], "to": command["from"], "method": command["method"], "status": "success",
                                  "type": "application/json", "resource": {"price": 3}}))
        reply = await request
        assert json.loads(reply.data) == {"price": 3}
        assert reply.headers["traceparent"] == PARENT
        await ws.close()
        await nc.close()

    run(scenario())


def test_with_creation_on_a_message_without_context_gets_one():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
        json.dump({"tracing": {"createContext": True}}, config)
    tracing = Hub("--config", config.name)
    try:
        async def scenario():
            ws = await lime_subscriber(tracing.ws_url, "orders.*")
            nc = await nats.connect(tracing.nats_url)
            sub = await nc.subscribe("orders.>")
            await settled(nc)
            await nc.publish("orders.new", b"1")
            msg = await sub.next_msg(timeout=5)
            assert W3C_PARENT.match(msg.headers["traceparent"]), msg.headers
            delivery = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert delivery["metadata"]["traceparent"] == msg.headers["traceparent"], "one trace, both dialects"
            await nc.publish("orders.old", b"2", headers={"traceparent": PARENT})
            assert (await sub.next_msg(timeout=5)).headers["traceparent"] == PARENT, "a valid context is kept"
            await ws.close()
            await nc.close()

        run(scenario())
    finally:
        assert tracing.stop() == 0
        os.unlink(config.name)
