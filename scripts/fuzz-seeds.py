#!/usr/bin/env python3
"""Writes the fuzz corpus's seeds (Fuzz/corpus/TARGET/seed-N) from the test vectors kept in the
repository: the LIME envelopes of the tests' raw strings, NATS operations of both roles, JSON,
WebSocket frames. Run again after adding test vectors; libFuzzer adds what it finds beside them."""
import hashlib
import os
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "Fuzz" / "corpus"

def envelopes():
    found = []
    for path in sorted((ROOT / "Tests").rglob("*.swift")):
        text = path.read_text()
        for match in re.finditer(r'#"(\{.*?\})"#', text):
            raw = match.group(1).replace("\\#(", "(")  # interpolations stay as text: still JSON-ish input
            found.append(raw.encode())
    return sorted(set(found))

def write(target, inputs):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for data in inputs:
        name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
        (directory / name).write_bytes(data)

def masked_frame(payload, opcode=1, fin=True, key=b"\x01\x02\x03\x04"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

lime = envelopes()
write("lime-decoder", lime)
write("publication-scanner", [e for e in lime if b"observe" in e] + lime[:20])
write("delivery-scanner", [e for e in lime if b"#subscription" in e or b"content" in e])
write("json", lime[:40] + [b'[1,-2.5e10,"x\\u00e9\\n",true,false,null,{"a":[]}]', b'"\\ud83d\\ude00"', b'{"a":{"b":{"c":[[[]]]}}}'])
write("lime-framer", [bytes([c]) + b" ".join(lime[i:i + 3]) for c, i in ((1, 0), (7, 3), (63, 6), (2, 9), (13, 12))])

client_ops = [
    b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nPING\r\n',
    b"SUB orders.* 1\r\nSUB jobs.> workers 2\r\nUNSUB 1 5\r\nUNSUB 2\r\n",
    b"PUB orders.new 5\r\nhello\r\nPUB orders.new _INBOX.x 0\r\n\r\n",
    b"HPUB orders.new 22 27\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n",
    b"HPUB r.x _INBOX.1 31 31\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n",
    b"PING\r\nPONG\r\npub a 1\r\nx\r\n",
]
server_ops = [
    b'INFO {"server_id":"x","headers":true,"max_payload":1048576}\r\n+OK\r\nPING\r\n',
    b"MSG orders.new 1 5\r\nhello\r\nMSG orders.new 2 _INBOX.x 0\r\n\r\n",
    b"HMSG orders.new 1 22 27\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n",
    b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n-ERR 'Authorization Violation'\r\n",
]
write("nats-server", [bytes([c]) + op for c in (0, 3, 17) for op in client_ops])
write("nats-client", [bytes([c]) + op for c in (0, 5, 31) for op in server_ops])
frames = [masked_frame(e) for e in lime[:10]]
frames.append(masked_frame(b"part one ", fin=False) + masked_frame(b"and two", opcode=0))
frames.append(masked_frame(b"ping", opcode=9) + masked_frame(struct.pack(">H", 1000), opcode=8))
write("websocket", [bytes([c]) + f for c in (0, 9) for f in frames])
write("subject-index", [bytes(range(i, i + 40)) for i in range(0, 200, 20)] + [b"\x00\x01\x02\x00\x01\x02\x05\x02\x03\x00\x01\x02"])
print("seeds:", {d.name: len(list(d.iterdir())) for d in sorted(CORPUS.iterdir())})
