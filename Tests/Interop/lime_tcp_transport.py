"""LIME over TCP for lime-python, written for the tests: lime-python ships only a WebSocket
transport. Envelopes go out as compact JSON back to back; inbound bytes are split by counting
braces outside strings, as the LIME TCP transport does."""
import asyncio
import json
from typing import List

from lime_python import SessionCompression, SessionEncryption, Transport


class TcpTransport(Transport):
    def __init__(self) -> None:
        super().__init__(SessionCompression.NONE, SessionEncryption.NONE)
        self.reader = None
        self.writer = None
        self._task = None

    async def open_async(self, uri: str = None) -> None:
        host, port = uri[len("net.tcp://"):].rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self._task = asyncio.ensure_future(self._read_loop())

    async def close_async(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def send(self, envelope: dict) -> None:
        self.writer.write(json.dumps(envelope, separators=(",", ":")).encode())

    def get_supported_compression(self) -> List[str]:
        return [SessionCompression.NONE]

    def set_compression(self, compression: str) -> None:
        pass

    def get_supported_encryption(self) -> List[str]:
        return [SessionEncryption.NONE]

    def set_encryption(self, encryption: str) -> None:
        pass

    def on_envelope(self, envelope: dict) -> None:
        pass

    async def _read_loop(self) -> None:
        buffer = bytearray()
        depth = 0
        in_string = False
        escaping = False
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                return
            for byte in chunk:
                if depth == 0 and byte != ord("{"):
                    continue
                buffer.append(byte)
                if in_string:
                    if escaping:
                        escaping = False
                    elif byte == ord("\\"):
                        escaping = True
                    elif byte == ord('"'):
                        in_string = False
                elif byte == ord('"'):
                    in_string = True
                elif byte == ord("{"):
                    depth += 1
                elif byte == ord("}"):
                    depth -= 1
                    if depth == 0:
                        self.on_envelope(json.loads(buffer))
                        buffer.clear()
