"""A raw HTTP/2 client (python3-h2) for tests that need to see or send what a
gRPC library hides: the server's first frame, HTTP status codes, trailers,
malformed gRPC framing; and, after it, helpers that speak the protocol
through it (sessions, calls, Echo) or below it (raw frames)."""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

SESSION = "/remotemedia.v1.RemoteExecution/Session"
ECHO = "/remotemedia.v1.RemoteExecution/Echo"
HEALTH = "/grpc.health.v1.Health/Check"

# gRPC status codes
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 3, 4
RESOURCE_EXHAUSTED, ABORTED, INTERNAL = 8, 10, 13
# HTTP/2 error codes and frame types
NO_ERROR, PROTOCOL_ERROR, H2_INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x7, 0xB
F_DATA, F_HEADERS, F_RST_STREAM, F_SETTINGS, F_PING, F_GOAWAY = 0, 1, 3, 4, 6, 7
F_CONTINUATION = 9
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


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
        """Send what the flow-control window allows now; return the count.
        A stream the server has reset (RST_STREAM NO_ERROR after its
        response) takes no more: all of body counts as sent."""
        if self.responses.get(sid) is not None and self.responses[sid].reset is not None:
            return len(body)
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


# --- protocol helpers -------------------------------------------------------


def split_grpc(data: bytes) -> list[bytes]:
    """The complete gRPC messages in a response body."""
    out, i = [], 0
    while i + 5 <= len(data):
        n = struct.unpack(">I", data[i + 1:i + 5])[0]
        if i + 5 + n > len(data):
            break
        out.append(data[i + 5:i + 5 + n])
        i += 5 + n
    return out


def server_msgs(data: bytes) -> list:
    from remotemedia._proto import remotemedia_pb2 as pb
    return [pb.ServerMessage.FromString(m) for m in split_grpc(data)]


def pump(c: H2Client, timeout: float, until=None) -> tuple[list, bool]:
    """Read and dispatch events for at most timeout seconds, or until an event
    satisfies until(). Returns (events, the server closed the socket)."""
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = c.sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return events, True
        if not data:
            return events, True
        new = c.conn.receive_data(data)
        for ev in new:
            c._event(ev)
        events.extend(new)
        out = c.conn.data_to_send()
        if out:
            try:
                c.sock.sendall(out)
            except OSError:
                return events, True
        if until is not None and any(until(ev) for ev in new):
            break
    return events, False


def wait_msgs(c: H2Client, sid: int, n: int, timeout: float = 30.0) -> list:
    """Read until stream sid carried n server messages, or ended."""
    deadline = time.monotonic() + timeout
    r = c.responses[sid]
    while len(split_grpc(r.data)) < n and not r.ended and time.monotonic() < deadline:
        pump(c, min(0.2, max(0.01, deadline - time.monotonic())))
    return server_msgs(r.data)


def open_session(c: H2Client, obj=None, timeout: float = 30.0) -> int:
    """Open a Session stream with a real worker (hosting obj, by default a
    targets.Sleeper); return it once Ready."""
    from targets import Sleeper
    sid = c.request(SESSION, grpc_frame(open_msg(obj if obj is not None else Sleeper())),
                    end=False)
    msgs = wait_msgs(c, sid, 1, timeout)
    assert msgs and msgs[-1].WhichOneof("msg") == "ready", c.responses[sid]
    return sid


def call_result(c: H2Client, sid: int, call_id: int, name: str, args: tuple,
                timeout: float = 30.0):
    """Make one call on a ready session and return its unpickled result."""
    import cloudpickle
    before = len(split_grpc(c.responses[sid].data))
    c.send(sid, call_msgs(call_id, name, args))
    msgs = wait_msgs(c, sid, before + 1, timeout)
    assert len(msgs) > before, c.responses[sid]
    m = msgs[before]
    assert m.WhichOneof("msg") == "result" and m.result.call_id == call_id, m
    return cloudpickle.loads(m.result.value.data)


def echo_ok(host: str, port: int, payload: bytes = b"ping", c: H2Client | None = None) -> None:
    """An Echo round trip on a new connection (or on c), and a health check."""
    from remotemedia._proto import remotemedia_pb2 as pb
    own = c is None
    c = c or H2Client(host, port, timeout=10)
    try:
        msg = pb.EchoMessage(payload=payload).SerializeToString()
        sid = c.request(ECHO, grpc_frame(msg))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == OK, r
        assert split_grpc(r.data) == [msg]
        sid = c.request(HEALTH, grpc_frame(b""))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == OK and split_grpc(r.data) == [b"\x08\x01"], r
    finally:
        if own:
            c.close()


def raw_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Parse HTTP/2 frames: (type, flags, stream id, payload)."""
    out, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + n > len(data):
            break
        ftype, flags = data[i + 3], data[i + 4]
        sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, sid, data[i + 9:i + 9 + n]))
        i += 9 + n
    return out


def raw_read(sock: socket.socket, timeout: float, stop_on_goaway: bool = True) -> tuple[bytes, bool]:
    """Everything the server sends for at most timeout seconds; (bytes, closed)."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = sock.recv(1 << 20)
        except socket.timeout:
            break
        except OSError:
            return got, True
        if not d:
            return got, True
        got += d
        if stop_on_goaway and any(f[0] == F_GOAWAY for f in raw_frames(got)):
            break
    return got, False


def goaway_code(frames) -> int | None:
    for ftype, _, _, payload in frames:
        if ftype == F_GOAWAY:
            return int.from_bytes(payload[4:8], "big")
    return None


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed sock (reading and dropping what it
    sends), or None if it stayed open for timeout."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - t0
    return None


def is_end(ev) -> bool:
    return isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                           h2.events.ConnectionTerminated))
