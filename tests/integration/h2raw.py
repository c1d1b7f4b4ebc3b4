"""A raw HTTP/2 client (python3-h2) for tests that need to see or send what a
gRPC library hides: the server's first frame, HTTP status codes, trailers,
malformed gRPC framing."""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


def grpc_frame(msg: bytes, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message; length may lie on purpose."""
    n = len(msg) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, n) + msg


@dataclass
class Response:
    first_frame_type: int = -1
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    ended: bool = False

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))

    @property
    def grpc_status(self) -> int | None:
        v = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if v is None else int(v)

    @property
    def grpc_message(self) -> str:
        from urllib.parse import unquote
        return unquote(self.trailers.get("grpc-message", self.headers.get("grpc-message", "")))


class H2Client:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.host, self.port = host, port
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.first_frame_type = -1
        self.responses: dict[int, Response] = {}

    def request(self, path: str, body: bytes = b"", content_type: str = "application/grpc",
                extra: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"),
                   (":authority", f"{self.host}:{self.port}"), (":path", path),
                   ("content-type", content_type), ("te", "trailers")] + (extra or [])
        self.conn.send_headers(sid, headers, end_stream=end and not body)
        self.responses[sid] = Response()
        self._unsent = getattr(self, "_unsent", {})
        if body:
            n = self.send(sid, body, end=end)
            if n < len(body):
                self._unsent[sid] = (body[n:], end)
        else:
            self.sock.sendall(self.conn.data_to_send())
        return sid

    def send(self, sid: int, body: bytes, end: bool = False) -> int:
        """Send what the flow-control window allows now; return the count."""
        sent = 0
        while sent < len(body):
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(body) - sent)
            if room <= 0:
                break
            last = end and sent + room == len(body)
            self.conn.send_data(sid, body[sent:sent + room], end_stream=last)
            sent += room
        if end and not body:
            self.conn.end_stream(sid)
        self.sock.sendall(self.conn.data_to_send())
        return sent

    def wait(self, sid: int, timeout: float = 10.0) -> Response:
        """Read until the stream ends or is reset, or timeout passes."""
        deadline = time.monotonic() + timeout
        r = self.responses[sid]
        while not r.ended and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            if self.first_frame_type == -1 and len(data) >= 4:
                self.first_frame_type = data[3]
            for ev in self.conn.receive_data(data):
                self._event(ev)
            self._flush_unsent()
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
        r.first_frame_type = self.first_frame_type
        return r

    def _flush_unsent(self) -> None:
        """Send more of bodies that waited for flow-control credit."""
        for sid, (body, end) in list(getattr(self, "_unsent", {}).items()):
            n = self.send(sid, body, end=end)
            if n == len(body):
                del self._unsent[sid]
            else:
                self._unsent[sid] = (body[n:], end)

    def _event(self, ev) -> None:
        sid = getattr(ev, "stream_id", None)
        r = self.responses.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived) and r:
            r.headers.update(dict(ev.headers))
        elif isinstance(ev, h2.events.TrailersReceived) and r:
            r.trailers.update(dict(ev.headers))
        elif isinstance(ev, h2.events.DataReceived) and r:
            r.data += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, h2.events.StreamEnded) and r:
            r.ended = True
        elif isinstance(ev, h2.events.StreamReset) and r:
            r.reset = ev.error_code
            r.ended = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def read_until(client: "H2Client", sid: int, nbytes: int, timeout: float = 10.0) -> bytes:
    """Read until stream sid has at least nbytes of DATA (or it ends)."""
    deadline = time.monotonic() + timeout
    r = client.responses[sid]
    while len(r.data) < nbytes and not r.ended and time.monotonic() < deadline:
        client.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = client.sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        for ev in client.conn.receive_data(data):
            client._event(ev)
        out = client.conn.data_to_send()
        if out:
            client.sock.sendall(out)
    return r.data


def open_msg(obj) -> bytes:
    """A gRPC-ready ClientMessage{open} for obj, whose defining module
    (a test module, unknown to the server) travels by value."""
    import sys
    import cloudpickle
    from remotemedia._proto import remotemedia_pb2 as pb
    cloudpickle.register_pickle_by_value(sys.modules[type(obj).__module__])
    return pb.ClientMessage(open=pb.Open(
        protocol=pb.PROTOCOL_V1, object=pb.Value(data=cloudpickle.dumps(obj)),
        python_version="%d.%d" % sys.version_info[:2],
        cloudpickle_version=cloudpickle.__version__)).SerializeToString()


def call_msgs(call_id: int, name: str, args: tuple, chunk: int = 1 << 20) -> bytes:
    """A Call and its argument chunks, each gRPC-framed."""
    import cloudpickle
    from remotemedia._proto import remotemedia_pb2 as pb
    doc = cloudpickle.dumps((args, {}))
    parts = [doc[i:i + chunk] for i in range(0, len(doc), chunk)] or [b""]
    out = grpc_frame(pb.ClientMessage(call=pb.Call(
        call_id=call_id, name=name,
        args=pb.Value(call_id=call_id, seq=0, more=len(parts) > 1, data=parts[0]))
    ).SerializeToString())
    for i, p in enumerate(parts[1:], 1):
        out += grpc_frame(pb.ClientMessage(value=pb.Value(
            call_id=call_id, seq=i, more=i < len(parts) - 1, data=p)).SerializeToString())
    return out
