"""lime-python (with lime-transport-websocket), unmodified, against a real Relay hub."""
import asyncio
import json

from lime_python import ClientChannel, Command, GuestAuthentication, Message, SessionState
from lime_transport_websocket import WebSocketTransport

from conftest import Hub, RelayListener, relay, run
from lime_tcp_transport import TcpTransport


async def open_channel(url, identity, instance, transport=None):
    transport = transport or WebSocketTransport()
    await transport.open_async(url)
    channel = ClientChannel(transport, True, True)
    inbox = asyncio.Queue()
    notifications = asyncio.Queue()
    channel.on_message = inbox.put_nowait
    channel.on_notification = notifications.put_nowait
    session = await channel.establish_session_async(None, None, identity, GuestAuthentication(), instance)
    return channel, session, inbox, notifications


def test_guest_session_is_established_with_the_requested_node(hub):
    async def scenario():
        channel, session, _, _ = await open_channel(hub.ws_url, "pyuser@relay.local", "laptop")
        assert session.state == SessionState.ESTABLISHED
        assert channel.local_node == "pyuser@relay.local/laptop"
        assert session.from_n == "postmaster@relay.local/hub"
        await channel.send_finishing_session_async()

    run(scenario())


def test_ping_is_answered(hub):
    async def scenario():
        channel, _, _, _ = await open_channel(hub.ws_url, "pinger@relay.local", "1")
        response = await channel.process_command_async(Command("get", "/ping"), 5)
        assert response.status == "success"
        assert response.type_n == "application/vnd.lime.ping+json"
        assert response.resource == {}
        await channel.send_finishing_session_async()

    run(scenario())


def test_two_lime_python_clients_exchange_messages(hub):
    async def scenario():
        alice, _, alice_inbox, alice_receipts = await open_channel(hub.ws_url, "alice@relay.local", "a")
        bob, _, bob_inbox, _ = await open_channel(hub.ws_url, "bob@relay.local", "b")
        alice.send_message(Message("text/plain", "hello bob", to="bob@relay.local"))
        at_bob = await asyncio.wait_for(bob_inbox.get(), 10)
        assert at_bob.content == "hello bob"
        assert at_bob.from_n == "alice@relay.local/a"
        # lime-python sends a `received` receipt (addressed to itself); the hub brings it to alice.
        receipt = await asyncio.wait_for(alice_receipts.get(), 10)
        assert receipt.event == "received" and receipt.id == at_bob.id

        bob.send_message(Message("application/json", {"n": 1, "ok": True}, to=at_bob.from_n))
        at_alice = await asyncio.wait_for(alice_inbox.get(), 10)
        assert at_alice.content == {"n": 1, "ok": True}
        assert at_alice.type_n == "application/json"
        await alice.send_finishing_session_async()
        await bob.send_finishing_session_async()

    run(scenario())


def test_command_to_unknown_destination_fails(hub):
    async def scenario():
        channel, _, _, _ = await open_channel(hub.ws_url, "caller@relay.local", "1")
        response = await channel.process_command_async(Command("get", "/stock", to="inventory@relay.local"), 5)
        assert response.status == "failure"
        assert response.reason["code"] == 42
        assert "inventory@relay.local" in response.reason["description"]
        await channel.send_finishing_session_async()

    run(scenario())


def test_undeliverable_message_gets_failed_notification(hub):
    async def scenario():
        channel, _, _, notifications = await open_channel(hub.ws_url, "sender@relay.local", "1")
        message = Message("text/plain", "anyone?", to="nobody@relay.local")
        channel.send_message(message)
        failed = await asyncio.wait_for(notifications.get(), 10)
        assert failed.event == "failed" and failed.id == message.id
        assert failed.reason["code"] == 42
        await channel.send_finishing_session_async()

    run(scenario())


def test_finishing_ends_the_session(hub):
    async def scenario():
        channel, _, _, _ = await open_channel(hub.ws_url, "leaver@relay.local", "1")
        finished = await channel.send_finishing_session_async()
        assert finished.state == SessionState.FINISHED
        assert finished.id == channel.session_id

    run(scenario())


def test_relay_client_over_tcp_sends_to_lime_python_over_websocket(hub):
    async def scenario():
        channel, _, inbox, _ = await open_channel(hub.ws_url, "pyuser@relay.local", "ws")
        result = await asyncio.to_thread(
            relay, "send", "--server", hub.tcp_url, "--identity", "swift@relay.local/tcp", "--to", "pyuser@relay.local", "from swift"
        )
        assert result.returncode == 0, result.stderr
        message = await asyncio.wait_for(inbox.get(), 10)
        assert message.content == "from swift"
        assert message.from_n == "swift@relay.local/tcp"
        await channel.send_finishing_session_async()

    run(scenario())


def test_lime_python_over_websocket_sends_to_relay_client_over_tcp(hub):
    listener = RelayListener(hub.tcp_url, "swift@relay.local/tcp", count=2)

    async def scenario():
        channel, _, _, _ = await open_channel(hub.ws_url, "pyuser@relay.local", "ws")
        channel.send_message(Message("text/plain", "first", to="swift@relay.local"))
        channel.send_message(Message("application/json", {"second": 2}, to="swift@relay.local/tcp"))
        lines = await asyncio.to_thread(listener.lines)
        assert '"content":"first"' in lines[0] and '"from":"pyuser@relay.local/ws"' in lines[0]
        # Content is forwarded as the publisher wrote it (lime-python writes `{"second": 2}`).
        assert json.loads(lines[1])["content"] == {"second": 2}
        assert '"content":{"second": 2}' in lines[1]
        await channel.send_finishing_session_async()

    run(scenario())


def test_relay_send_reports_an_undeliverable_message(hub):
    result = relay("send", "--server", hub.ws_url, "--to", "nobody@relay.local", "hello?")
    assert result.returncode != 0
    assert "not connected" in result.stderr


def test_lime_python_over_tcp(hub):
    async def scenario():
        over_tcp, session, tcp_inbox, _ = await open_channel(hub.tcp_url.replace("tcp://", "net.tcp://"), "tcpuser@relay.local", "t", TcpTransport())
        assert session.state == SessionState.ESTABLISHED
        over_ws, _, ws_inbox, _ = await open_channel(hub.ws_url, "wsuser@relay.local", "w")
        pong = await over_tcp.process_command_async(Command("get", "/ping"), 5)
        assert pong.status == "success"
        over_tcp.send_message(Message("text/plain", "tcp to ws {with braces}", to="wsuser@relay.local"))
        assert (await asyncio.wait_for(ws_inbox.get(), 10)).content == "tcp to ws {with braces}"
        over_ws.send_message(Message("text/plain", 'ws to tcp "quoted"', to="tcpuser@relay.local/t"))
        assert (await asyncio.wait_for(tcp_inbox.get(), 10)).content == 'ws to tcp "quoted"'
        await over_tcp.send_finishing_session_async()
        await over_ws.send_finishing_session_async()

    run(scenario())


def test_sigterm_finishes_sessions_and_exits_cleanly():
    own_hub = Hub()
    finished = None

    async def scenario():
        nonlocal finished
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        channel, _, _, _ = await open_channel(own_hub.ws_url, "stayer@relay.local", "1")
        # lime-python's own finished callback breaks after establishment (it calls a reset listener
        # with one argument too many), so watch the transport close and read the channel's state.
        channel.transport.on_close = lambda: ended.set_result(channel.state)
        code = await asyncio.to_thread(own_hub.stop)
        assert code == 0, "".join(own_hub.log)
        finished = await asyncio.wait_for(ended, 10)

    run(scenario())
    assert finished == SessionState.FINISHED
