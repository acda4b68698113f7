"""The monitoring endpoints seen by an operator's tools: Prometheus's own text parser, curl-like
HTTP, after real traffic from nats-py and lime-python."""
import asyncio
import json
import urllib.request

import nats
from prometheus_client.parser import text_string_to_metric_families

from conftest import run, settled
from test_lime_python import open_channel


def get(hub, path):
    with urllib.request.urlopen(hub.http_url + path, timeout=5) as response:
        return response.status, response.read().decode()


def samples(text):
    """Every sample of a Prometheus text exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_parse_with_prometheus_and_count_the_traffic(hub):
    async def scenario():
        channel, _, inbox, _ = await open_channel(hub.ws_url, "watcher@relay.local", "1")
        client = await nats.connect(hub.nats_url)
        for n in range(7):
            await client.publish("news.today", f"item {n}".encode())
        await settled(client)
        await client.close()
        await channel.send_finishing_session_async()

    run(scenario())
    status, text = get(hub, "/metrics")
    assert status == 200
    found = samples(text)
    # 7 PUBs from nats-py; the LIME session's envelopes come on top.
    assert found[("relay_messages_received_total", ())] >= 7
    assert found[("relay_publications_total", ())] == 7
    assert found[("relay_publications_unmatched_total", ())] == 7
    assert found[("relay_connections_total", ())] == 2
    assert ("relay_uptime_seconds", ()) in found


def test_varz_and_connz_answer_as_json(hub):
    async def scenario():
        client = await nats.connect(hub.nats_url, name="monitor-test")
        await client.subscribe("jobs.*", queue="workers")
        await settled(client)
        status, body = get(hub, "/connz?sort=subs")
        connz = json.loads(body)
        assert status == 200 and connz["total"] == 1
        assert connz["connections"][0]["kind"] == "nats" and connz["connections"][0]["subscriptions"] == 1
        status, body = get(hub, "/subsz")
        assert json.loads(body)["subscriptions"] == [{"subject": "jobs.*", "subscriptions": 1, "queue": "workers"}]
        await client.close()

    run(scenario())
    status, body = get(hub, "/varz")
    varz = json.loads(body)
    assert status == 200 and varz["server_name"] == "relay" and varz["listeners"]["nats"] == hub.nats_url
    status, body = get(hub, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
