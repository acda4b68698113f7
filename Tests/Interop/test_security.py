"""TLS, authentication and permissions against third-party clients: nats-py with an SSLContext,
`websockets` over wss://, lime-python over wss://, and the relay CLI with --tls-ca. Certificates are
made here with Debian's openssl, never committed."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import nats
import pytest
import websockets
from lime_python import ClientChannel, Command, PlainAuthentication, SessionState
from lime_transport_websocket import WebSocketTransport

from conftest import RELAY_BIN, Hub, relay, run, settled


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class PKI:
    """A CA, a server certificate for localhost and 127.0.0.1, and client certificates."""

    def __init__(self, directory, name="Relay Interop CA"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_key, self.ca = self.path("ca.key"), self.path("ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", f"/CN={name}", "-keyout", self.ca_key, "-out", self.ca)
        self.server, self.server_key = self.issue("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, name, common_name, extensions):
        key, csr, cert, ext = (self.path(f"{name}.{suffix}") for suffix in ("key", "csr", "pem", "ext"))
        with open(ext, "w") as file:
            file.write(extensions + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={common_name}",
                "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial", "-days", "1",
                "-extfile", ext, "-out", cert)
        return cert, key

    def context(self):
        context = ssl.create_default_context(cafile=self.ca)
        return context


@pytest.fixture(scope="module")
def pki():
    directory = tempfile.mkdtemp(prefix="relay-pki-")
    yield PKI(directory)
    shutil.rmtree(directory, ignore_errors=True)


def hashed(*args):
    result = relay("passwd", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


class SecureHub(Hub):
    """A hub with TLS required on every listener and a few users, one of them restricted."""

    def __init__(self, pki, required=True):
        self.key, key_digest = hashed("--key")
        (password_hash,) = hashed("s3cret")
        self.config_dir = tempfile.mkdtemp(prefix="relay-config-")
        config = os.path.join(self.config_dir, "relay.json")
        with open(config, "w") as file:
            json.dump({
                "guest": True,
                "httpRequiresAdmin": True,
                "admins": ["alice@relay.local"],
                "limits": {"authFailureDelaySeconds": 0},
                "users": [
                    {"identity": "alice@relay.local", "password": password_hash},
                    {"identity": "svc@relay.local", "key": key_digest},
                    {"identity": "reader@relay.local", "password": password_hash,
                     "permissions": {"publish": ["news.>", "_INBOX.>"], "subscribe": ["news.>", "_INBOX.>"]}},
                ],
            }, file)
        # Copies, so a test may replace them and send SIGHUP.
        self.cert, self.cert_key = os.path.join(self.config_dir, "hub.pem"), os.path.join(self.config_dir, "hub.key")
        shutil.copy(pki.server, self.cert)
        shutil.copy(pki.server_key, self.cert_key)
        flags = ["--config", config, "--tls-cert", self.cert, "--tls-key", self.cert_key]
        super().__init__(*flags, *(["--tls-required"] if required else []))
        self.nats_host_port = self.nats_url[len("nats://"):].split(" ")[0]

    def stop(self):
        try:
            return super().stop()
        finally:
            shutil.rmtree(self.config_dir, ignore_errors=True)


@pytest.fixture
def secure_hub(pki):
    instance = SecureHub(pki)
    yield instance
    assert instance.stop() == 0, "".join(instance.log)


def test_the_monitoring_endpoints_take_https_and_an_administrators_credentials(secure_hub, pki):
    import base64
    import urllib.error
    import urllib.request

    https = secure_hub.http_url.replace("http://", "https://")

    def get(url, user=None, context=None):
        request = urllib.request.Request(url)
        if user:
            request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    assert get(https + "/healthz", context=pki.context())[0] == 200, "the health check is open"
    assert get(https + "/varz", context=pki.context())[0] == 401
    assert get(https + "/varz", "reader:s3cret", pki.context())[0] == 403, "reader is no administrator"
    status, body = get(https + "/varz", "alice:s3cret", pki.context())
    assert status == 200
    varz = json.loads(body)
    assert varz["listeners"]["http"].startswith("https://") and varz["config"]["httpRequiresAdmin"] is True
    status, body = get(secure_hub.http_url + "/healthz")
    assert status == 403 and b"TLS required" in body


def test_nats_py_publishes_subscribes_and_requests_over_tls(secure_hub, pki):
    async def scenario():
        client = await nats.connect(f"tls://{secure_hub.nats_host_port}", tls=pki.context(), tls_hostname="localhost")
        got = asyncio.Queue()

        async def collect(msg):
            got.put_nowait(msg)

        await client.subscribe("orders.>", cb=collect)
        async def answer(msg):
            await msg.respond(b"pong:" + msg.data)
        await client.subscribe("svc.ping", cb=answer)
        await settled(client)
        other = await nats.connect(f"nats://{secure_hub.nats_host_port}", tls=pki.context(), tls_hostname="localhost")
        await other.publish("orders.new", b"over tls")
        assert (await asyncio.wait_for(got.get(), 5)).data == b"over tls"
        reply = await other.request("svc.ping", b"1", timeout=5)
        assert reply.data == b"pong:1"
        await other.close()
        await client.close()

    run(scenario())


def test_a_plaintext_nats_client_is_refused_when_tls_is_required(secure_hub):
    host, port = secure_hub.nats_host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        stream = raw.makefile("rwb")
        info = json.loads(stream.readline()[5:])
        assert info["tls_required"] is True
        stream.write(b"CONNECT {}\r\nPING\r\n")
        stream.flush()
        assert stream.readline() == b"-ERR 'Secure Connection - TLS Required'\r\n"
        assert stream.readline() == b""  # closed


def test_websockets_runs_a_lime_session_over_wss(secure_hub, pki):
    async def scenario():
        async with websockets.connect(secure_hub.wss_url, subprotocols=["lime"], ssl=pki.context()) as ws:
            await ws.send('{"state":"new"}')
            authenticating = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert authenticating["state"] == "authenticating"
            await ws.send(json.dumps({"id": authenticating["id"], "from": "py@relay.local/tls", "state": "authenticating",
                                      "scheme": "guest", "authentication": {}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["state"] == "established"
            await ws.send('{"id":"p1","method":"get","uri":"/ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["status"] == "success"

    run(scenario())


def test_a_plaintext_websocket_client_is_refused_with_a_reason(secure_hub):
    async def scenario():
        async with websockets.connect(secure_hub.wss_url.replace("wss://", "ws://"), subprotocols=["lime"]) as ws:
            await ws.send('{"state":"new"}')
            failed = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert failed["state"] == "failed" and "TLS is required" in failed["reason"]["description"]

    run(scenario())


def test_lime_python_signs_in_over_wss(secure_hub, pki, monkeypatch):
    # lime-transport-websocket opens wss:// with Python's default context: it trusts SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca)

    async def scenario():
        transport = WebSocketTransport()
        await transport.open_async(secure_hub.wss_url)
        channel = ClientChannel(transport, True, True)
        # LIME's plain scheme carries the password base64-encoded; lime-python leaves that to the caller.
        authentication = PlainAuthentication(base64.b64encode(b"s3cret").decode())
        session = await channel.establish_session_async(None, None, "alice@relay.local", authentication, "py")
        assert session.state == SessionState.ESTABLISHED
        assert channel.local_node == "alice@relay.local/py"
        response = await channel.process_command_async(Command("get", "/ping"), 5)
        assert response.status == "success"
        await channel.send_finishing_session_async()

    run(scenario())


def test_nats_py_authenticates_with_a_password_or_a_key_and_is_refused_otherwise(secure_hub, pki):
    async def scenario():
        options = {"tls": pki.context(), "tls_hostname": "localhost", "allow_reconnect": False, "max_reconnect_attempts": 0}
        url = f"tls://{secure_hub.nats_host_port}"
        alice = await nats.connect(url, user="alice", password="s3cret", **options)
        await alice.close()
        svc = await nats.connect(url, token=secure_hub.key, **options)
        await svc.close()
        errors = []

        async def on_error(error):
            errors.append(str(error))

        with pytest.raises(Exception):
            await nats.connect(url, user="alice", password="wrong", error_cb=on_error, **options)
        assert any("authorization violation" in error.lower() for error in errors), errors

    run(scenario())


def test_nats_py_is_held_to_its_permissions(secure_hub, pki):
    async def scenario():
        options = {"tls": pki.context(), "tls_hostname": "localhost"}
        url = f"tls://{secure_hub.nats_host_port}"
        watcher = await nats.connect(url, user="alice", password="s3cret", **options)
        everything = asyncio.Queue()

        async def collect(msg):
            everything.put_nowait(msg)

        await watcher.subscribe(">", cb=collect)
        await settled(watcher)
        errors = asyncio.Queue()

        async def on_error(error):
            errors.put_nowait(str(error))

        reader = await nats.connect(url, user="reader", password="s3cret", error_cb=on_error, **options)
        await reader.publish("billing.x", b"not allowed")
        await settled(reader)
        error = await asyncio.wait_for(errors.get(), 5)
        assert 'permissions violation for publish to "billing.x"' in error.lower(), error
        await reader.subscribe("billing.>")
        await settled(reader)
        error = await asyncio.wait_for(errors.get(), 5)
        assert 'permissions violation for subscription to "billing.>"' in error.lower(), error
        # The connection carries on, and what was refused reached nobody.
        await reader.publish("news.today", b"allowed")
        first = await asyncio.wait_for(everything.get(), 5)
        assert first.subject == "news.today" and first.data == b"allowed"
        await reader.close()
        await watcher.close()

    run(scenario())


def test_the_cli_speaks_tls_with_tls_ca(secure_hub, pki):
    sub = subprocess.Popen([RELAY_BIN, "sub", "alerts.*", "--count", "2", "--server", secure_hub.wss_url, "--tls-ca", pki.ca],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "relay" in sub.stderr.readline()
    over_nats = relay("pub", "alerts.nats", "one", "--server", f"tls://{secure_hub.nats_host_port}", "--tls-ca", pki.ca)
    assert over_nats.returncode == 0, over_nats.stderr
    over_tcp = relay("pub", "alerts.tcp", "two", "--confirm", "--server", secure_hub.tcp_url, "--tls-ca", pki.ca,
                     "--identity", "svc@relay.local", "--key", secure_hub.key)
    assert over_tcp.returncode == 0, over_tcp.stderr
    out, err = sub.communicate(timeout=20)
    assert sub.returncode == 0, err
    assert [line.split(": ", 1)[1] for line in out.splitlines()] == ["one", "two"]
    untrusted = relay("pub", "alerts.x", "three", "--server", secure_hub.wss_url)
    assert untrusted.returncode != 0


def test_sighup_reloads_the_certificate_and_open_sessions_carry_on(pki):
    hub = SecureHub(pki)
    try:
        async def scenario():
            async with websockets.connect(hub.wss_url, subprotocols=["lime"], ssl=pki.context()) as before:
                await before.send('{"state":"new"}')
                await asyncio.wait_for(before.recv(), 5)
                other = PKI(os.path.join(pki.dir, "second"), name="Second Interop CA")
                shutil.copy(other.server, hub.cert)
                shutil.copy(other.server_key, hub.cert_key)
                hub.process.send_signal(signal.SIGHUP)
                # The hub says when it has read the new files.
                deadline = time.monotonic() + 10
                while not any("TLS certificates reloaded" in line for line in hub.log):
                    assert time.monotonic() < deadline, "".join(hub.log)
                    await asyncio.sleep(0.05)
                async with websockets.connect(hub.wss_url, subprotocols=["lime"], ssl=other.context()) as after:
                    await after.send('{"state":"new"}')
                    assert json.loads(await asyncio.wait_for(after.recv(), 5))["state"] == "authenticating"
                with pytest.raises(ssl.SSLError):
                    async with websockets.connect(hub.wss_url, subprotocols=["lime"], ssl=pki.context()):
                        pass
                # The session opened before the reload still works.
                await before.send('{"state":"finishing"}')
                assert json.loads(await asyncio.wait_for(before.recv(), 5))["state"] in ("finished", "failed")

        run(scenario())
    finally:
        assert hub.stop() == 0, "".join(hub.log)
