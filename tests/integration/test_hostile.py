"""Hostile peers on both sides of the front.

Client side, through a raw HTTP/2 client: SETTINGS, PING, RST_STREAM and
CONTINUATION floods, the rapid-reset pattern (CVE-2023-44487), an HPACK bomb,
streams past the advertised limit, gRPC length prefixes that lie, the
compressed flag without an encoding, protobuf that does not parse, sessions
that break the protocol (no Open first, duplicate call ids, Pull for a call
never made), and 10,000 sessions opened and dropped at once. Each time the
server must survive with bounded memory, and keep serving other clients.

Worker side, with tests/lib/fake_worker.py as --worker (sandbox off):
garbage frames, a 2^31-byte length prefix, answers for calls never made, a
worker that says Ready and then nothing, and one that exits at once. Each
session must end with a clear status, and the front must be unharmed.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q tests/integration/test_hostile.py
"""
from __future__ import annotations

import os
import random
import re
import select
import socket
import struct
import sys
import time
import warnings

import h2.events
import pytest
from google.protobuf.message import DecodeError
from hpack import Encoder

from clientlib import run
from h2raw import (
    ABORTED, DEADLINE_EXCEEDED, ECHO, ENHANCE_YOUR_CALM, F_CONTINUATION, F_HEADERS, F_PING,
    F_RST_STREAM, F_SETTINGS, H2_INTERNAL_ERROR, INTERNAL, INVALID_ARGUMENT,
    NO_ERROR, OK, PREFACE, PROTOCOL_ERROR, REFUSED_STREAM, RESOURCE_EXHAUSTED, SESSION,
    H2Client, call_msgs, call_result, echo_ok, frame, goaway_code, grpc_frame,
    open_msg, open_session, pump, raw_frames, raw_read, split_grpc, wait_msgs,
)
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.core.exceptions import RemoteMediaError, RemoteTimeoutError
from remotemedia.remote import RemoteProxyClient
from serverlib import FAKE_WORKER, SERVER_ARGS, Server
from targets import Sleeper

RSS_SLACK_KB = 50 * 1024
# make sanitize-test: ASan's shadow and quarantine make RSS meaningless, and
# sanitized processes are slower.
SANITIZED = bool(os.environ.get("RM_SANITIZED"))
SANDBOX_OFF = any(a == "--sandbox" and b == "off" for a, b in zip(SERVER_ARGS, SERVER_ARGS[1:])) \
    or "--sandbox=off" in SERVER_ARGS


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_unharmed(srv: Server, rss_before: int) -> None:
    """Alive, within 50 MB of where it started, and serving a new connection."""
    assert srv.proc.poll() is None, srv.log_text()[-3000:]
    grown = rss_kb(srv.proc.pid) - rss_before
    assert SANITIZED or grown < RSS_SLACK_KB, f"VmRSS grew by {grown} kB"
    echo_ok(srv.host, srv.port, payload=b"still here")


def raw_conn(srv: Server) -> socket.socket:
    """A TCP connection that has sent the preface and an empty SETTINGS."""
    s = socket.create_connection((srv.host, srv.port), timeout=10)
    s.sendall(PREFACE + frame(F_SETTINGS, 0, 0))
    return s


def send_quietly(s: socket.socket, data: bytes) -> bool:
    """sendall that tolerates the server hanging up; False if it did."""
    try:
        s.sendall(data)
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fast():
    """A server whose sessions are unconfined: a real worker is Ready in a
    fraction of a second (sandboxed, it takes seconds)."""
    srv = Server(["--sandbox", "off"])
    yield srv
    rc = srv.stop()
    log = srv.log_text()
    srv.cleanup()
    assert rc == 0, log[-4000:]


def session_end(srv: Server, body: bytes, end: bool = True, timeout: float = 15.0):
    """Send body on a new Session stream; return the Response once it ended."""
    c = H2Client(srv.host, srv.port, timeout=timeout)
    try:
        sid = c.request(SESSION, body, end=end)
        r = c.wait(sid, timeout=timeout)
        assert r.ended, r
        return r
    finally:
        c.close()


# --- floods --------------------------------------------------------------------

def test_settings_flood(server):
    rss = rss_kb(server.proc.pid)
    s = raw_conn(server)
    try:
        send_quietly(s, frame(F_SETTINGS, 0, 0) * 10_000)
        got, closed, acks = b"", False, 0
        deadline = time.monotonic() + 10
        while acks < 10_001 and not closed and time.monotonic() < deadline:
            more, closed = raw_read(s, 0.5)
            got += more
            frames = raw_frames(got)
            acks = sum(1 for f in frames if f[0] == F_SETTINGS and f[1] & 1)
            if goaway_code(frames) is not None:
                break
        # Each acknowledged as read (and no more), or the connection ended
        # as a flood.
        assert acks == 10_001 or closed or goaway_code(frames) is not None, acks
    finally:
        s.close()
    assert_unharmed(server, rss)


def flood_without_reading(srv: Server) -> socket.socket:
    """1,000,000 SETTINGS frames from a peer that reads none of the ACKs.
    Whether all of them went out is s.flooded: with a receive buffer this
    small, loopback TCP sometimes stalls the sender for longer than the
    send timeout (seen with the front of 09c8f32 as well), and then the
    front never gets enough of the flood to detect it."""
    s = socket.create_connection((srv.host, srv.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    blob = frame(F_SETTINGS, 0, 0) * 100_000
    sent = send_quietly(s, PREFACE)
    for _ in range(10):
        if not (sent := send_quietly(s, blob)):
            break
    return _Flooder(s, sent)


class _Flooder:
    """The flooding socket, and whether the whole flood was sent."""

    def __init__(self, s: socket.socket, flooded: bool) -> None:
        self.sock, self.flooded = s, flooded

    def close(self) -> None:
        self.sock.close()


def test_settings_flood_from_a_peer_that_never_reads_is_detected(fresh_server):
    # No spares: nothing else starts in the server while it is flooded.
    server = fresh_server(["--session-pool", "0"])
    rss = rss_kb(server.proc.pid)
    s = flood_without_reading(server)
    try:
        # Detection needs the front to have read enough of the flood to
        # fill its send buffer with ACKs: slow on a loaded machine. A flood
        # that TCP itself held back is not one to detect; the front must
        # still be unharmed.
        deadline = time.monotonic() + 30
        while "Flooding was detected" not in server.log_text():
            if not s.flooded:
                break
            assert time.monotonic() < deadline, "no flood detected"
            time.sleep(0.1)
        assert_unharmed(server, rss)
    finally:
        s.close()


def test_a_dead_connection_whose_peer_never_reads_is_dropped(fresh_server):
    """Whichever comes first, the flood limit or the idle timeout (which
    wins on a loaded machine, where the flood takes longer than 1 s to
    arrive), the front lets go of a peer that reads nothing."""
    srv = fresh_server(["--idle-timeout", "1s", "--session-pool", "0"])
    base = srv.sockets()
    s = flood_without_reading(srv)
    try:
        deadline = time.monotonic() + 30
        while srv.sockets() > base and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.sockets() == base, "the front still holds the flooder's socket"
        log = srv.log_text()
        assert any(why in log for why in (
            "Flooding was detected", "output not taken", "idle; closing")), log[-2000:]
    finally:
        s.close()


def test_ping_flood(server):
    rss = rss_kb(server.proc.pid)
    s = raw_conn(server)
    try:
        send_quietly(s, b"".join(frame(F_PING, 0, 0, struct.pack(">Q", i))
                                 for i in range(10_000)))
        got, closed = raw_read(s, 5.0)
        frames = raw_frames(got)
        assert goaway_code(frames) == ENHANCE_YOUR_CALM, frames[-3:]
        assert sum(1 for f in frames if f[0] == F_PING) <= 25  # the burst, no more
    finally:
        s.close()
    assert_unharmed(server, rss)


def test_rst_stream_flood(server):
    """10,000 RST_STREAMs for a stream that already ended: nghttp2's reset
    rate limit ends the connection; one for a stream never opened is a
    protocol error."""
    rss = rss_kb(server.proc.pid)
    c = H2Client(server.host, server.port)
    try:
        echo_ok(server.host, server.port, c=c)  # streams 1 and 3, both ended
        send_quietly(c.sock, frame(F_RST_STREAM, 0, 1, struct.pack(">I", 8)) * 10_000)
        got, closed = raw_read(c.sock, 5.0)
        assert goaway_code(raw_frames(got)) == H2_INTERNAL_ERROR, raw_frames(got)[-3:]
    finally:
        c.close()
    s = raw_conn(server)
    try:
        s.sendall(frame(F_RST_STREAM, 0, 99, struct.pack(">I", 8)))
        got, _ = raw_read(s, 5.0)
        assert goaway_code(raw_frames(got)) == PROTOCOL_ERROR
    finally:
        s.close()
    assert_unharmed(server, rss)


def test_rapid_reset_cve_2023_44487(server):
    """Open and at once reset 5,000 streams: the front must not do the work
    of each, and nghttp2's reset rate limit ends the connection."""
    rss = rss_kb(server.proc.pid)
    c = H2Client(server.host, server.port)
    hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
            (":path", ECHO), ("content-type", "application/grpc"), ("te", "trailers")]
    sent = 0
    t0 = time.monotonic()
    try:
        pump(c, 0.3)
        for i in range(5000):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, hdrs)
            c.conn.reset_stream(sid)
            sent += 1
            if i % 100 == 99 and not send_quietly(c.sock, c.conn.data_to_send()):
                break
        send_quietly(c.sock, c.conn.data_to_send())
        events, closed = pump(c, 5.0, until=lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        assert term or closed, "5,000 rapid resets were taken without complaint"
        if term:
            assert term[0].error_code in (H2_INTERNAL_ERROR, ENHANCE_YOUR_CALM)
            assert term[0].last_stream_id < 2 * 1500
    finally:
        c.close()
    assert time.monotonic() - t0 < 30
    assert_unharmed(server, rss)


def test_continuation_flood(server):
    """A header block cut into thousands of CONTINUATION frames (the 2024
    CONTINUATION flood): cut off after a few."""
    rss = rss_kb(server.proc.pid)
    block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                              (":path", ECHO), ("content-type", "application/grpc"),
                              ("x-pad", "p" * 3000)])
    out = frame(F_HEADERS, 0, 1, block[:8])
    rest = block[8:]
    for i in range(len(rest)):
        out += frame(F_CONTINUATION, 4 if i == len(rest) - 1 else 0, 1, rest[i:i + 1])
    s = raw_conn(server)
    try:
        send_quietly(s, out)
        got, closed = raw_read(s, 5.0)
        assert closed or goaway_code(raw_frames(got)) is not None
        assert not any(f[0] == F_HEADERS and f[2] == 1 for f in raw_frames(got)), \
            "the request was served"
    finally:
        s.close()
    assert_unharmed(server, rss)


def test_hpack_bomb(server):
    """A 4,000-byte header put in the HPACK dynamic table, then referenced
    10,000 times in one 14 KB block (40 MB once decoded)."""
    rss = rss_kb(server.proc.pid)
    c = H2Client(server.host, server.port)
    try:
        pump(c, 0.3)
        msg = grpc_frame(pb.EchoMessage(payload=b"b").SerializeToString())
        sid = c.request(ECHO, msg, extra=[("x-bomb", "b" * 4000)] * 10_000)
        events, closed = pump(c, 5.0, until=lambda ev: isinstance(
            ev, (h2.events.StreamReset, h2.events.ConnectionTerminated, h2.events.StreamEnded)))
        r = c.responses[sid]
        assert r.reset is not None or closed or any(
            isinstance(ev, h2.events.ConnectionTerminated) for ev in events), events
        assert r.grpc_status is None and not r.data
    finally:
        c.close()
    assert_unharmed(server, rss)


def test_streams_past_the_limit_are_refused_and_the_rest_served(server):
    """150 streams at once against the default --max-streams 100, sent before
    the client read the server's SETTINGS."""
    c = H2Client(server.host, server.port, timeout=20)
    try:
        sids = [c.request(ECHO, b"", end=False) for _ in range(150)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                sum(c.responses[s].reset is not None for s in sids) < 50:
            pump(c, 0.2)
        refused = [s for s in sids if c.responses[s].reset is not None]
        assert len(refused) == 50, len(refused)
        assert all(c.responses[s].reset == REFUSED_STREAM for s in refused)
        assert refused == sids[100:]  # the first hundred were taken
        for s in sids[:100]:
            c.send(s, grpc_frame(pb.EchoMessage(payload=b"%d" % s).SerializeToString()), end=True)
        for s in sids[:100]:
            r = c.wait(s, timeout=10)
            assert r.grpc_status == OK, r
            assert pb.EchoMessage.FromString(split_grpc(r.data)[0]).payload == b"%d" % s
    finally:
        c.close()
    echo_ok(server.host, server.port)


# --- gRPC framing -------------------------------------------------------------------

def test_length_prefix_larger_than_sent_then_end_stream(fast):
    msg = pb.EchoMessage(payload=b"short").SerializeToString()
    c = H2Client(fast.host, fast.port)
    try:
        sid = c.request(ECHO, grpc_frame(msg, length=len(msg) + 1000))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INTERNAL and "stream ended inside a message" in r.grpc_message, r
        # A claim of 4 GiB - 1: over any limit, refused at the header.
        sid = c.request(ECHO, grpc_frame(msg, length=0xFFFFFFFF))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED and "larger than the limit" in r.grpc_message, r
    finally:
        c.close()
    r = session_end(fast, grpc_frame(open_msg(Sleeper()), length=100_000))
    assert r.grpc_status == INTERNAL and "stream ended inside a message" in r.grpc_message, r
    fast.wait_idle(timeout=20)


def test_length_prefix_smaller_than_sent(fast):
    c = H2Client(fast.host, fast.port)
    try:
        # b"\x0a\x05" of b"\x0a\x05hello": a truncated field.
        msg = pb.EchoMessage(payload=b"hello").SerializeToString()
        sid = c.request(ECHO, grpc_frame(msg, length=2))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT and "malformed EchoMessage" in r.grpc_message, r
        # Length 0: an empty (valid) message, echoed; then the payload is
        # read as a header whose flag byte is 0x0a.
        msg = pb.EchoMessage(payload=b"abcdef").SerializeToString()
        sid = c.request(ECHO, grpc_frame(msg, length=0))
        r = c.wait(sid, timeout=10)
        assert split_grpc(r.data) == [b""], r
        assert r.grpc_status == INTERNAL and "invalid gRPC message flag" in r.grpc_message, r
    finally:
        c.close()
    body = open_msg(Sleeper())
    r = session_end(fast, grpc_frame(body, length=len(body) // 2))
    assert r.grpc_status in (INVALID_ARGUMENT, INTERNAL), r
    fast.wait_idle(timeout=20)
    echo_ok(fast.host, fast.port)


def test_compressed_flag_without_grpc_encoding(fast):
    msg = pb.EchoMessage(payload=b"zip").SerializeToString()
    c = H2Client(fast.host, fast.port)
    try:
        sid = c.request(ECHO, grpc_frame(msg, compressed=True))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INTERNAL, r
        assert "compressed message without grpc-encoding" in r.grpc_message
        # A flag byte that is neither 0 nor 1.
        sid = c.request(ECHO, b"\x07" + grpc_frame(msg)[1:])
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INTERNAL and "invalid gRPC message flag" in r.grpc_message, r
    finally:
        c.close()
    r = session_end(fast, grpc_frame(open_msg(Sleeper()), compressed=True))
    assert r.grpc_status == INTERNAL, r
    assert "compressed message without grpc-encoding" in r.grpc_message
    fast.wait_idle(timeout=20)


def test_compressed_message_with_an_unsupported_encoding_is_unimplemented(fast):
    import gzip
    msg = gzip.compress(pb.EchoMessage(payload=b"zip").SerializeToString())
    c = H2Client(fast.host, fast.port)
    try:
        sid = c.request(ECHO, grpc_frame(msg, compressed=True),
                        extra=[("grpc-encoding", "gzip")])
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == 12, r  # UNIMPLEMENTED
    finally:
        c.close()


# --- sessions that break the protocol ------------------------------------------------

def undecodable(seed: int) -> bytes:
    """Random bytes that protobuf's own parser rejects as a ClientMessage."""
    rnd = random.Random(seed)
    while True:
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(8, 512)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pb.ClientMessage.FromString(data)
        except DecodeError:
            return data


def test_protobuf_that_does_not_parse_is_invalid_argument(fast):
    fast.wait_idle(timeout=20)
    spawned = fast.session_workers()
    c = H2Client(fast.host, fast.port)
    try:
        sids = [c.request(SESSION, grpc_frame(undecodable(seed)), end=False)
                for seed in range(20)]
        for sid in sids:
            r = c.wait(sid, timeout=10)
            assert r.grpc_status == INVALID_ARGUMENT, r
            assert "malformed ClientMessage" in r.grpc_message, r
    finally:
        c.close()
    assert fast.session_workers() == spawned  # no worker started or taken
    assert fast.session_dirs() == []
    echo_ok(fast.host, fast.port)


def test_message_with_two_members_is_invalid_argument(fast):
    """Open and Call in one ClientMessage: parsers disagree on what that
    is (protobuf-c keeps the last, others merge), so the front refuses it."""
    fast.wait_idle(timeout=20)
    spawned = fast.session_workers()
    both = (pb.ClientMessage(open=pb.Open(protocol=pb.PROTOCOL_V1, source="x=1",
                                          class_name="X")).SerializeToString()
            + pb.ClientMessage(call=pb.Call(call_id=1, name="m")).SerializeToString())
    r = session_end(fast, grpc_frame(both), end=False)
    assert r.grpc_status == INVALID_ARGUMENT, r
    assert "malformed ClientMessage" in r.grpc_message, r
    assert fast.session_workers() == spawned


def test_a_varint_over_64_bits_is_invalid_argument(fast):
    """Call.args.more as a 10-byte varint whose one bit is past bit 63:
    protobuf-c (the worker) reads that bool as true, 64 bits as false.
    Had the front read it as false, the call would wait for a chunk that
    the front refuses. It refuses the message instead, and the session
    had served a call before it."""
    import cloudpickle
    doc = cloudpickle.dumps((("x",), {}))
    value = pb.Value(call_id=2, data=doc).SerializeToString()
    value += b"\x18" + b"\x80" * 9 + b"\x02"  # field 3 (more), 2 << 63
    call = pb.Call(call_id=2, name="size").SerializeToString() + b"\x22" + bytes(
        [len(value)]) + value
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        sid = open_session(c)
        assert call_result(c, sid, 1, "size", ("abc",)) == 3
        c.send(sid, grpc_frame(b"\x12" + bytes([len(call)]) + call))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT, r
        assert "malformed ClientMessage" in r.grpc_message, r
    finally:
        c.close()
    fast.wait_idle(timeout=20)
    echo_ok(fast.host, fast.port)


@pytest.mark.parametrize("field", ["python_version", "cloudpickle_version", "source",
                                   "class_name", "requirements"])
def test_open_strings_that_are_not_utf8_are_invalid_argument(fast, field):
    """protobuf-c does not check a string's UTF-8, and the worker reads
    them as Python str: the front refuses the Open, starting nothing."""
    fast.wait_idle(timeout=20)
    spawned = fast.session_workers()
    kw = dict(protocol=pb.PROTOCOL_V1, format=pb.FORMAT_JSON,
              source="class C:\n    pass\n", class_name="C")
    kw[field] = ["QQQQ"] if field == "requirements" else "QQQQ"
    msg = pb.ClientMessage(open=pb.Open(**kw)).SerializeToString()
    assert msg.count(b"QQQQ") == 1
    r = session_end(fast, grpc_frame(msg.replace(b"QQQQ", b"Q\xffQQ")), end=False)
    assert r.grpc_status == INVALID_ARGUMENT, r
    assert f"Open.{field} is not UTF-8" in r.grpc_message, r
    assert fast.session_workers() == spawned
    assert fast.session_dirs() == []


def test_first_message_not_open_is_invalid_argument_and_starts_no_worker(fast):
    fast.wait_idle(timeout=20)
    spawned = fast.session_workers()
    for first in (pb.ClientMessage(call=pb.Call(call_id=1, name="ping")),
                  pb.ClientMessage(close=pb.Close()),
                  pb.ClientMessage(value=pb.Value(call_id=0, seq=1, data=b"x")),
                  pb.ClientMessage()):
        r = session_end(fast, grpc_frame(first.SerializeToString()), end=False)
        assert r.grpc_status == INVALID_ARGUMENT, (first, r)
        assert "the first message of a session must be Open" in r.grpc_message, r
    r = session_end(fast, b"")  # half-closed before any message
    assert r.grpc_status == INVALID_ARGUMENT and "before Open" in r.grpc_message, r
    assert fast.session_workers() == spawned
    assert fast.session_dirs() == []


def test_duplicate_and_decreasing_call_ids_are_invalid_argument(fast):
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        dup = open_session(c)
        assert call_result(c, dup, 1, "ping", ()) == "pong"
        c.send(dup, call_msgs(1, "ping", ()))
        r = c.wait(dup, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT, r
        assert "call id 1 is not greater than the previous call id 1" in r.grpc_message
        down = open_session(c)
        assert call_result(c, down, 5, "ping", ()) == "pong"
        c.send(down, call_msgs(3, "ping", ()))
        r = c.wait(down, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT, r
        assert "call id 3 is not greater than the previous call id 5" in r.grpc_message
        # Two Calls with the same id in flight at once.
        both = open_session(c)
        c.send(both, call_msgs(1, "sleep", (0.5,)) + call_msgs(1, "sleep", (0.5,)))
        r = c.wait(both, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT and "call id 1" in r.grpc_message, r
    finally:
        c.close()
    fast.wait_idle(timeout=20)


def test_pull_or_cancel_for_an_unknown_call_id_is_invalid_argument(fast):
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        pull = open_session(c)
        c.send(pull, grpc_frame(pb.ClientMessage(pull=pb.Pull(call_id=9, n=1)).SerializeToString()))
        r = c.wait(pull, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT and "unknown call id 9" in r.grpc_message, r
        cancel = open_session(c)
        assert call_result(c, cancel, 1, "ping", ()) == "pong"
        # A finished call may be cancelled (it races with the answer) ...
        c.send(cancel, grpc_frame(pb.ClientMessage(cancel=pb.Cancel(call_id=1)).SerializeToString()))
        assert call_result(c, cancel, 2, "ping", ()) == "pong"
        # ... one never made may not.
        c.send(cancel, grpc_frame(pb.ClientMessage(cancel=pb.Cancel(call_id=3)).SerializeToString()))
        r = c.wait(cancel, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT and "unknown call id 3" in r.grpc_message, r
    finally:
        c.close()
    fast.wait_idle(timeout=20)


def test_a_call_name_holding_a_nul_is_invalid_argument(fast):
    """The worker would call what comes before the NUL."""
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        sid = open_session(c)
        c.send(sid, call_msgs(1, "ping\0evil", ()))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == INVALID_ARGUMENT, r
        assert r.grpc_message == "the name of call 1 holds a NUL character"
    finally:
        c.close()
    fast.wait_idle(timeout=20)


def test_a_call_whose_deadline_passes_before_it_starts_never_runs(fast):
    """The deadline runs from the call's arrival at the front, not from
    when the worker gets to it: a call that waits behind a slow one (or
    for its own arguments) past its deadline fails alone, timed out,
    without running, and the session goes on. (The worker was killed,
    once, for arguments that came too slowly.)"""
    import cloudpickle
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        sid = open_session(c)
        before = len(split_grpc(c.responses[sid].data))
        args = cloudpickle.dumps(((), {}))
        c.send(sid, call_msgs(1, "sleep", (1.0,)) + grpc_frame(pb.ClientMessage(call=pb.Call(
            call_id=2, name="ping", kind=pb.CALL_METHOD, timeout_ms=200,
            args=pb.Value(call_id=2, data=args))).SerializeToString()))
        # A call whose arguments stop half-way.
        c.send(sid, grpc_frame(pb.ClientMessage(call=pb.Call(
            call_id=3, name="size", kind=pb.CALL_METHOD, timeout_ms=300,
            args=pb.Value(call_id=3, data=b"half", more=True))).SerializeToString()))
        msgs = wait_msgs(c, sid, before + 3)[before:]
        got = {m.WhichOneof("msg") + str(getattr(m, m.WhichOneof("msg")).call_id): m
               for m in msgs}
        assert set(got) == {"result1", "error2", "error3"}, msgs
        assert got["error2"].error.timeout and got["error3"].error.timeout
        assert "exceeded its deadline of 0.2s before it could start" in \
            got["error2"].error.message
        assert got["error3"].error.message == \
            "the call's deadline passed while its arguments were arriving"
        assert call_result(c, sid, 4, "ping", ()) == "pong"
        assert not c.responses[sid].ended
    finally:
        c.close()
    fast.wait_idle(timeout=20)


def timed_call(call_id: int, name: str, args: tuple, timeout_ms: int) -> bytes:
    import cloudpickle
    return grpc_frame(pb.ClientMessage(call=pb.Call(
        call_id=call_id, name=name, kind=pb.CALL_METHOD, timeout_ms=timeout_ms,
        args=pb.Value(call_id=call_id, data=cloudpickle.dumps((args, {}))))).SerializeToString())


def answers(msgs) -> dict:
    """Server messages by kind and call id: {"result1": m, ...}."""
    return {m.WhichOneof("msg") + str(getattr(m, m.WhichOneof("msg")).call_id): m
            for m in msgs}


def test_a_deadline_that_passes_behind_a_call_without_one_does_not_kill(fast):
    """A call without a deadline may run as long as it needs; a call or a
    Pull queued behind it past its own deadline and the grace (2 s) fails
    alone once the worker gets to it. The front used to kill the worker
    at the queued call's grace: the session, the running call's result
    and the object's state were lost."""
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        sid = open_session(c)
        before = len(split_grpc(c.responses[sid].data))
        c.send(sid, call_msgs(1, "items", ()))  # a generator, then
        c.send(sid, call_msgs(2, "sleep", (3.0,)) + timed_call(3, "ping", (), 200) +
               grpc_frame(pb.ClientMessage(pull=pb.Pull(
                   call_id=1, n=1, timeout_ms=200)).SerializeToString()))
        msgs = wait_msgs(c, sid, before + 4, timeout=20)[before:]
        got = answers(msgs)
        assert {"result1", "result2", "error3"} <= set(got), msgs
        assert got["error3"].error.timeout, msgs
        assert not c.responses[sid].ended, c.responses[sid]
        assert call_result(c, sid, 4, "ping", ()) == "pong"
    finally:
        c.close()
    fast.wait_idle(timeout=20)


@pytest.mark.parametrize("case", ["big_chunk", "big_continuation", "short_total",
                                  "long_total", "object_total"])
def test_a_value_whose_chunks_break_the_documented_bounds_is_refused(fast, case):
    """A chunk holds at most Ready.limits.max_chunk_bytes, and a value's
    chunks add up to chunk 0's total_size: both were documented and
    neither was checked (a review from grpc-js)."""
    import cloudpickle
    doc = cloudpickle.dumps((("x",), {}))
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        if case == "object_total":
            obj = pb.ClientMessage.FromString(open_msg(Sleeper()))
            obj.open.object.total_size = len(obj.open.object.data) + 7
            sid = c.request(SESSION, grpc_frame(obj.SerializeToString()), end=False)
            want = "the object came to %d bytes, not the %d that chunk 0's total_size declared" % (
                len(obj.open.object.data), len(obj.open.object.data) + 7)
        else:
            sid = open_session(c)
            big = b"\0" * ((1 << 20) + 10 * 1024)
            args = {
                "big_chunk": pb.Value(call_id=1, data=big, more=True),
                "big_continuation": pb.Value(call_id=1, data=doc, more=True),
                "short_total": pb.Value(call_id=1, data=doc, total_size=len(doc) + 1),
                "long_total": pb.Value(call_id=1, data=doc, total_size=len(doc) - 1),
            }[case]
            body = grpc_frame(pb.ClientMessage(call=pb.Call(
                call_id=1, name="size", kind=pb.CALL_METHOD, args=args)).SerializeToString())
            if case == "big_continuation":
                body += grpc_frame(pb.ClientMessage(value=pb.Value(
                    call_id=1, seq=1, data=big)).SerializeToString())
            deadline = time.monotonic() + 15
            while body and not c.responses[sid].ended and time.monotonic() < deadline:
                body = body[c.send(sid, body):]  # as flow control lets it
                pump(c, 0.05)
            want = {
                "big_chunk": "chunk 0 of the arguments of call 1 holds 1058816 bytes of data, "
                             "over the 1048576 a chunk may hold (Ready.limits.max_chunk_bytes)",
                "big_continuation": "chunk 1 of the arguments of call 1 holds 1058816 bytes of "
                                    "data, over the 1048576 a chunk may hold "
                                    "(Ready.limits.max_chunk_bytes)",
                "short_total": "the arguments of call 1 came to %d bytes, not the %d that "
                               "chunk 0's total_size declared" % (len(doc), len(doc) + 1),
                "long_total": "the arguments of call 1 came to %d bytes, not the %d that "
                              "chunk 0's total_size declared" % (len(doc), len(doc) - 1),
            }[case]
        r = c.wait(sid, timeout=15)
        assert r.grpc_status == INVALID_ARGUMENT, r
        assert r.grpc_message == want, r
    finally:
        c.close()
    fast.wait_idle(timeout=20)


@pytest.mark.parametrize("second", [300, 0], ids=["overdue-too", "no-deadline"])
def test_calls_that_all_overstay_their_deadlines_still_kill_the_worker(fast, second):
    """When every call that came before it is past its deadline and the
    grace, the worker is killed, naming the first of them. A call that
    came after cannot hold the first up, with a deadline or without."""
    c = H2Client(fast.host, fast.port, timeout=30)
    try:
        sid = open_session(c)
        c.send(sid, timed_call(1, "stubborn", (), 300) + timed_call(2, "ping", (), second))
        r = c.wait(sid, timeout=15)
        assert r.grpc_status == DEADLINE_EXCEEDED, r
        assert r.grpc_message == ("call 1 ('stubborn') did not stop within 2000 ms of its "
                                  "deadline of 300 ms; the worker was killed"), r
    finally:
        c.close()
    fast.wait_idle(timeout=20)


def test_an_open_whose_object_stops_coming_does_not_hold_its_slot(fresh_server):
    """Open with the object's first chunk, then nothing: after Open, each
    --handshake-timeout must bring bytes of the object, as it must bring
    Open itself. A slow upload whose chunks keep coming is not cut."""
    import cloudpickle
    srv = fresh_server(["--sandbox", "off", "--max-sessions", "2", "--session-pool", "0",
                        "--handshake-timeout", "2s"])
    cloudpickle.register_pickle_by_value(sys.modules[Sleeper.__module__])
    obj = cloudpickle.dumps(Sleeper())
    third = len(obj) // 3 + 1
    parts = [obj[i:i + third] for i in range(0, len(obj), third)]
    assert len(parts) == 3

    def chunk(seq):
        value = pb.Value(data=parts[seq], seq=seq, more=seq < 2, total_size=len(obj))
        if seq == 0:
            return pb.ClientMessage(open=pb.Open(
                protocol=pb.PROTOCOL_V1, object=value,
                python_version="%d.%d" % sys.version_info[:2],
                cloudpickle_version=cloudpickle.__version__))
        return pb.ClientMessage(value=value)

    c = H2Client(srv.host, srv.port, timeout=30)
    try:
        stuck = [c.request(SESSION, grpc_frame(chunk(0).SerializeToString()), end=False)
                 for _ in range(2)]
        for sid in stuck:
            r = c.wait(sid, timeout=10)
            assert r.grpc_status == DEADLINE_EXCEEDED, r
            assert r.grpc_message == ("chunk 1 of the object did not come within 2000 ms "
                                      "(--handshake-timeout)")
        srv.wait_idle(timeout=20)  # both slots free again
        slow = c.request(SESSION, grpc_frame(chunk(0).SerializeToString()), end=False)
        for seq in (1, 2):
            time.sleep(1.2)  # 2.4 s in all: more than the timeout, chunk by chunk less
            c.send(slow, grpc_frame(chunk(seq).SerializeToString()))
        got = [m.WhichOneof("msg") for m in wait_msgs(c, slow, 1)]
        assert got == ["ready"], (got, c.responses[slow])
        assert call_result(c, slow, 1, "ping", ()) == "pong"
    finally:
        c.close()
    srv.wait_idle(timeout=20)


def test_an_open_that_arrives_slowly_is_not_cut_and_one_that_stalls_is(fresh_server):
    """The Open message itself, trickled in over more than
    --handshake-timeout: each timeout's worth of time brought bytes, so
    the session opens; nor is an Open that is arriving idleness
    (--session-idle-timeout). Half an Open and then nothing ends the
    session with DEADLINE_EXCEEDED, saying so."""
    srv = fresh_server(["--sandbox", "off", "--handshake-timeout", "2s",
                        "--session-idle-timeout", "1s"])
    body = grpc_frame(open_msg(Sleeper()))
    n = 6
    step = -(-len(body) // n)
    c = H2Client(srv.host, srv.port, timeout=30)
    try:
        slow = c.request(SESSION, b"", end=False)
        for i in range(n):  # 3 s in all, a piece every 0.5 s
            c.send(slow, body[i * step:(i + 1) * step])
            pump(c, 0.5)
        got = [m.WhichOneof("msg") for m in wait_msgs(c, slow, 1)]
        assert got == ["ready"], (got, c.responses[slow])
        assert call_result(c, slow, 1, "ping", ()) == "pong"
        stalled = c.request(SESSION, body[:len(body) // 2], end=False)
        r = c.wait(stalled, timeout=10)
        assert r.grpc_status == DEADLINE_EXCEEDED, r
        assert r.grpc_message == ("the Open stalled: no byte of it came within 2000 ms "
                                  "(--handshake-timeout)"), r
    finally:
        c.close()
    srv.wait_idle(timeout=20)


@pytest.mark.parametrize("value", ["abc", "1", "1s", "-1S", "1.5S", "100000000S"])
def test_a_malformed_grpc_timeout_is_refused(server, value):
    """Not ignored: the client meant to set a deadline."""
    c = H2Client(server.host, server.port)
    try:
        msg = grpc_frame(pb.EchoMessage(payload=b"t").SerializeToString())
        r = c.wait(c.request(ECHO, msg, extra=[("grpc-timeout", value)]))
        assert r.grpc_status == INTERNAL, r
        assert r.grpc_message.startswith("malformed grpc-timeout header"), r.grpc_message
        r = c.wait(c.request(ECHO, msg, extra=[("grpc-timeout", "99999999m")]))
        assert r.grpc_status == OK and split_grpc(r.data) == [msg[5:]], r
    finally:
        c.close()


def test_a_response_that_ends_first_resets_what_the_client_still_sends(server):
    """Trailers before the client half-closed: unless it half-closes within
    a second, RST_STREAM(NO_ERROR) follows (RFC 9113 8.1), so that the
    stream does not wait, half-closed, for as long as the client likes."""
    c = H2Client(server.host, server.port)
    try:
        t0 = time.monotonic()
        sid = c.request("/no.such/Method", b"", end=False)
        events, _ = pump(c, 5, until=lambda ev: isinstance(ev, h2.events.StreamReset))
        assert time.monotonic() - t0 >= 0.9  # not before the client could read
        r = c.responses[sid]
        assert r.grpc_status == 12, r  # UNIMPLEMENTED
        resets = [ev for ev in events if isinstance(ev, h2.events.StreamReset)]
        assert [(ev.stream_id, ev.error_code) for ev in resets] == [(sid, NO_ERROR)]
        # A client that half-closes after reading the trailers is not reset.
        polite = c.request("/no.such/Method", b"", end=False)
        c.wait(polite)
        assert c.responses[polite].grpc_status == 12
        c.send(polite, b"", end=True)
        events, _ = pump(c, 1.5)
        assert not [ev for ev in events if isinstance(ev, h2.events.StreamReset)], events
        echo_ok(server.host, server.port, c=c)
    finally:
        c.close()


def test_session_streams_that_never_send_open_do_not_hold_slots_forever(fresh_server):
    srv = fresh_server(["--sandbox", "off", "--max-sessions", "2",
                        "--handshake-timeout", "1s", "--idle-timeout", "1s"])
    squatter = H2Client(srv.host, srv.port)
    try:
        for _ in range(2):  # HEADERS only: no Open, ever
            squatter.request(SESSION, b"", end=False)
        pump(squatter, 3.0)

        async def main():
            async with RemoteProxyClient(srv.config(max_retries=0, timeout=10)) as client:
                p = await client.create_proxy(Sleeper())
                return await p.ping()
        assert run(main()) == "pong"
    finally:
        squatter.close()
    srv.wait_idle(timeout=20)


# --- sessions opened and dropped -----------------------------------------------------

def open_and_drop(srv: Server, total: int, per_conn: int, deadline: float) -> None:
    """Open `total` Session streams, each with an Open and at once a
    RST_STREAM, `per_conn` to a connection (under nghttp2's reset limit).
    Each connection ends with a PING whose ACK says the server read it all."""
    body = grpc_frame(open_msg(Sleeper()))
    hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
            (":path", SESSION), ("content-type", "application/grpc"), ("te", "trailers")]
    done = 0
    while done < total:
        assert time.monotonic() < deadline, f"only {done} of {total} sessions in time"
        c = H2Client(srv.host, srv.port, timeout=30)
        try:
            pump(c, 0.2, until=lambda ev: isinstance(ev, h2.events.SettingsAcknowledged))
            n = min(per_conn, total - done)
            for i in range(n):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, hdrs)
                c.conn.send_data(sid, body)
                c.conn.reset_stream(sid)
                if i % 50 == 49:
                    c.sock.sendall(c.conn.data_to_send())
            c.conn.ping(b"batchend")
            c.sock.sendall(c.conn.data_to_send())
            events, closed = pump(c, max(1.0, deadline - time.monotonic()), until=lambda ev: isinstance(
                ev, (h2.events.PingAckReceived, h2.events.ConnectionTerminated)))
            assert not closed and not any(
                isinstance(ev, h2.events.ConnectionTerminated) for ev in events), events[-3:]
            assert any(isinstance(ev, h2.events.PingAckReceived) for ev in events)
            done += n
        finally:
            c.close()


@pytest.mark.timeout(170)
def test_ten_thousand_sessions_opened_and_dropped(fresh_server):
    # Unconfined: each session costs a worker spawn and an rm (5 to 10 ms in
    # all; more with a sandbox's cgroups), which is what this test is about.
    n = 1000 if SANITIZED else 10_000
    srv = fresh_server(["--sandbox", "off"])
    rss = rss_kb(srv.proc.pid)
    t0 = time.monotonic()
    open_and_drop(srv, n, 500, t0 + 140)
    srv.wait_idle(timeout=60)
    log = srv.log_text()
    assert log.count("front_session_new: session") == n
    assert log.count("session_free: session") == n
    assert_unharmed(srv, rss)

    async def main():
        async with RemoteProxyClient(srv.config(max_retries=0)) as client:
            p = await client.create_proxy(Sleeper())
            return await p.ping()
    assert run(main()) == "pong"


@pytest.mark.skipif(SANDBOX_OFF, reason="about the sandbox's uids and cgroups")
def test_sessions_dropped_past_the_uid_range_recycle_uids_and_cgroups(server):
    """With the sandbox on, 1,100 sessions dropped at once go through more
    than the 1,000 session uids: each uid, cgroup and directory comes back."""
    rss = rss_kb(server.proc.pid)
    before = server.log_text().count("session_free: session")
    open_and_drop(server, 1100, 550, time.monotonic() + 60)
    server.wait_idle(timeout=60)
    assert server.log_text().count("session_free: session") - before >= 1100
    assert_unharmed(server, rss)
    c = H2Client(server.host, server.port, timeout=30)
    try:
        sid = open_session(c)  # a uid is still to be had
        assert call_result(c, sid, 1, "ping", ()) == "pong"
    finally:
        c.close()
    server.wait_idle(timeout=20)


# --- hostile workers ------------------------------------------------------------------

def fake_server(fresh_server, tmp_path, mode: str) -> Server:
    """A server whose workers are the fake in this mode. No spares: each
    session starts its own, so that what it does is that session's
    failure (a spare that fails before it took the Open ends its session
    UNAVAILABLE instead, which test_pool.py covers)."""
    os.chmod(FAKE_WORKER, 0o755)
    link = tmp_path / f"fake_worker_{mode}"
    link.symlink_to(FAKE_WORKER)
    return fresh_server(["--worker", str(link), "--sandbox", "off", "--session-pool", "0"])


def fake_open() -> bytes:
    return grpc_frame(pb.ClientMessage(open=pb.Open(
        protocol=pb.PROTOCOL_V1, object=pb.Value(data=b"not even a pickle"),
        python_version="3.11", cloudpickle_version="2.2.0")).SerializeToString())


@pytest.mark.parametrize("mode,code,message", [
    ("garbage", INTERNAL, "worker protocol violation: malformed message"),
    ("badtype", INTERNAL, "worker protocol violation: unknown frame type"),
    ("oversize", INTERNAL, "worker protocol violation: message larger than the limit"),
    ("early_result", INTERNAL, "worker protocol violation: answer before Ready"),
    ("result_unknown", INTERNAL, "worker protocol violation: result for an unknown call (call 42)"),
    ("item_unknown", INTERNAL, "worker protocol violation: item for an unknown generator (call 7)"),
    ("ready_twice", INTERNAL, "worker protocol violation: unexpected Ready"),
    ("two_members", INTERNAL, "worker protocol violation: malformed message"),
    ("bad_utf8", INTERNAL, "worker protocol violation: malformed message"),
    ("output_socket", INTERNAL, "worker protocol violation: Output on its socket"),
    ("flush_flood", INTERNAL, "worker protocol violation: result for an unknown call (call 42)"),
    ("exit", ABORTED, "worker exited with status 3"),
    ("ready_exit0", ABORTED, "worker exited with status 0 before the session was closed"),
])
def test_hostile_worker_ends_its_session_with_a_clear_status(fresh_server, tmp_path,
                                                             mode, code, message):
    srv = fake_server(fresh_server, tmp_path, mode)
    rss = rss_kb(srv.proc.pid)
    c = H2Client(srv.host, srv.port, timeout=20)
    try:
        neighbour = c.request(ECHO, b"", end=False)  # same connection, open throughout
        sid = c.request(SESSION, fake_open(), end=False)
        r = c.wait(sid, timeout=15)
        assert r.ended and r.grpc_status == code, r
        assert message in r.grpc_message, r.grpc_message
        kinds = [pb.ServerMessage.FromString(m).WhichOneof("msg") for m in split_grpc(r.data)]
        assert kinds in ([], ["ready"]), kinds  # nothing bogus relayed
        c.send(neighbour, grpc_frame(pb.EchoMessage(payload=b"n").SerializeToString()), end=True)
        assert c.wait(neighbour, timeout=10).grpc_status == OK
        echo_ok(srv.host, srv.port, c=c)
    finally:
        c.close()
    srv.wait_idle(timeout=15)  # the fake worker was killed, its directory removed
    assert_unharmed(srv, rss)


@pytest.mark.parametrize("mode,close,message", [
    ("hang_up", False, r"the worker did not exit within \d+ ms of closing its socket to "
     r"the server; the server killed it"),
    ("deaf_to_close", True, r"the worker did not exit within \d+ ms of Close; the server "
     r"killed it"),
])
def test_a_worker_the_server_had_to_kill_is_said_so(fresh_server, tmp_path, mode, close,
                                                   message):
    """Not "killed by signal 9": the client learns that the server killed
    a worker that did not exit, and after what."""
    srv = fake_server(fresh_server, tmp_path, mode)
    c = H2Client(srv.host, srv.port, timeout=20)
    try:
        sid = c.request(SESSION, fake_open(), end=False)
        if close:
            wait_msgs(c, sid, 1)  # Ready
            c.send(sid, grpc_frame(pb.ClientMessage(close=pb.Close()).SerializeToString()))
        r = c.wait(sid, timeout=15)
        assert r.ended and r.grpc_status == ABORTED, r
        assert re.fullmatch(message, r.grpc_message), r.grpc_message
    finally:
        c.close()
    srv.wait_idle(timeout=15)


def test_worker_that_goes_silent_after_ready(fresh_server, tmp_path):
    """Ready, then nothing: the call times out on the client, which closes
    the session; the front kills the worker long before it would give up by
    itself (60 s)."""
    srv = fake_server(fresh_server, tmp_path, "silent")

    async def main():
        async with RemoteProxyClient(srv.config(timeout=1.0, max_retries=0)) as client:
            p = await client.create_proxy(object())
            t0 = time.monotonic()
            with pytest.raises(RemoteTimeoutError):
                await p.work()
            assert time.monotonic() - t0 < 5
            assert srv.worker_pids(), "the silent worker is already gone"
            await client.close_proxy(p)
    t0 = time.monotonic()
    run(main(), timeout=30)
    srv.wait_idle(timeout=15)
    assert time.monotonic() - t0 < 20
    assert srv.proc.poll() is None
    echo_ok(srv.host, srv.port)
    log = srv.log_text()
    assert re.search(r"session \w+: (the client went away|call 1 \('work'\) did not stop)", log), \
        log[-2000:]


class FdCloser:
    """User code that takes fd 3 for its own use, or takes away the
    worker's line to the front."""

    def take3(self, how):
        import os
        if how == "close":
            os.close(3)
        else:
            os.dup2(os.open("/dev/null", os.O_RDWR), 3)
        return how

    def close_socket(self):
        """Close whatever socket the process holds: the worker's own."""
        import os
        import stat
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.close(fd)
            except OSError:
                pass
        return "closed"


@pytest.mark.parametrize("how", ["close", "dup2"])
def test_user_code_may_take_fd_3(fresh_server, how):
    """The worker's socket came on fd 3 and moves off it at start: a dup2
    onto fd 3 (as a library preparing a child might do) sent the session's
    answers to /dev/null, and with the sandbox, whose outer processes keep
    the socket open too, the call hung without an error."""
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config(timeout=120.0, max_retries=0)) as client:
            p = await client.create_proxy(FdCloser())
            assert await p.take3(how) == how
            assert await p.take3("dup2") == "dup2"  # the session goes on
    run(main(), timeout=60)
    srv.wait_idle(timeout=15)


def test_user_code_that_closes_the_workers_socket_ends_its_session(fresh_server):
    """The result cannot be written: the worker ends at once, rather than
    wait (with the sandbox, its outer processes keep the socket open, so
    the front would see no EOF) for the front's next word or the call's
    deadline."""
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config(timeout=120.0, max_retries=0)) as client:
            p = await client.create_proxy(FdCloser())
            t0 = time.monotonic()
            with pytest.raises(RemoteMediaError) as e:
                await p.close_socket()
            assert time.monotonic() - t0 < 15, e.value
            assert e.value.code is not None and e.value.code.name == "ABORTED", e.value
    run(main(), timeout=60)
    srv.wait_idle(timeout=15)
    assert srv.proc.poll() is None
    echo_ok(srv.host, srv.port)


def test_echo_answers_a_client_does_not_read_are_bounded_per_connection(server):
    """A client that sends on many Echo streams and never reads: the front
    stops granting credit once the connection holds FRONT_CONN_OUT_HIGH
    (4 MiB) of answers, so the client can send little more than its
    connection window (16 MiB), and the front's memory stays near that.
    Once the client reads, every answer arrives, whole and in order."""
    c = H2Client(server.host, server.port, timeout=30)
    before = rss_kb(server.proc.pid)
    msg = grpc_frame(pb.EchoMessage(payload=bytes(range(256)) * 255).SerializeToString())
    sids = [c.request(ECHO, b"", end=False) for _ in range(32)]
    todo = {sid: msg for sid in sids}  # what is left of each's message
    sent = dict.fromkeys(sids, 0)
    got = dict.fromkeys(sids, b"")
    ended = set()
    unacked = []

    def send_what_fits(finish: bool) -> bool:
        moved = False
        for sid in sids:
            while todo[sid] and sid not in ended:
                room = min(c.conn.local_flow_control_window(sid),
                           c.conn.max_outbound_frame_size, len(todo[sid]))
                if room <= 0:
                    break
                c.conn.send_data(sid, todo[sid][:room])
                sent[sid] += room
                todo[sid] = todo[sid][room:] or (b"" if finish else msg)
                moved = True
            if finish and not todo[sid] and sid not in ended:
                c.conn.end_stream(sid)
                ended.add(sid)
        c.sock.sendall(c.conn.data_to_send())
        return moved

    def read(acknowledge: bool) -> bool:
        for ev in unacked if acknowledge else ():
            c.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        if acknowledge:
            unacked.clear()
        data = b""
        if select.select([c.sock], [], [], 0.05)[0]:
            data = c.sock.recv(1 << 20)
            assert data, "the server closed the connection"
            for ev in c.conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived) and not acknowledge:
                    c.responses[ev.stream_id].data += ev.data
                    unacked.append(ev)  # its credit stays with the client
                else:
                    c._event(ev)
        c.sock.sendall(c.conn.data_to_send())
        return bool(data)

    try:
        # Send while credit comes, taking WINDOW_UPDATEs but never a byte
        # of DATA: the client's 64 KiB receive window stays full.
        deadline = time.monotonic() + 60
        quiet = time.monotonic()
        while time.monotonic() - quiet < 2 and time.monotonic() < deadline:
            moved = send_what_fits(False)
            if read(acknowledge=False) or moved:
                quiet = time.monotonic()  # 2 s without a byte either way ends it
        total = sum(sent.values())
        assert 16 << 20 <= total < 24 << 20, f"sent {total} bytes before the server stopped"
        grown = rss_kb(server.proc.pid) - before
        assert SANITIZED or grown < 32 * 1024, f"VmRSS grew by {grown} kB"
        # Now read: the answers drain, credit returns, the rest goes.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                c.responses[sid].ended for sid in sids):
            send_what_fits(True)
            read(acknowledge=True)
        for sid in sids:
            r = c.responses[sid]
            assert r.ended and r.grpc_status == OK, (sid, r)
            assert len(r.data) == sent[sid] and r.data == msg * (sent[sid] // len(msg))
    finally:
        c.close()
    echo_ok(server.host, server.port)


def test_an_unread_echo_holds_back_its_siblings_only_over_the_bound(server):
    """Stream A's answers are never read (~3 MiB held), B's are read late;
    C sends a 1.5 MiB message, more than its 1 MiB window. Once the client
    has read B, the connection holds under 4 MiB of answers, so C gets its
    credit back and finishes, though A still holds its share."""
    c = H2Client(server.host, server.port, timeout=30)
    msg = grpc_frame(pb.EchoMessage(payload=b"x" * 65000).SerializeToString())
    a, b = c.request(ECHO, b"", end=False), c.request(ECHO, b"", end=False)
    b_unacked = [0]

    def pump(read_b: bool) -> None:
        """Take what came; credit the connection, and B once it is read."""
        while select.select([c.sock], [], [], 0.05)[0]:
            data = c.sock.recv(1 << 20)
            assert data, "the server closed the connection"
            for ev in c.conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    c.conn.increment_flow_control_window(ev.flow_controlled_length)
                    if ev.stream_id == b:
                        b_unacked[0] += ev.flow_controlled_length
        if read_b and b_unacked[0]:
            c.conn.increment_flow_control_window(b_unacked[0], b)
            b_unacked[0] = 0
        c.sock.sendall(c.conn.data_to_send())

    def send_whole(sid: int, body: bytes, read_b: bool, quiet_s: float) -> int:
        """Send body as credit allows until quiet_s pass without any."""
        left, quiet = body, time.monotonic()
        while left and time.monotonic() - quiet < quiet_s:
            n = c.send(sid, left)
            left = left[n:]
            if n:
                quiet = time.monotonic()
            pump(read_b)
        return len(body) - len(left)

    try:
        for sid, limit in ((a, 3 << 20), (b, 2 << 20)):
            sent = 0
            while sent < limit and send_whole(sid, msg, False, 1.5) == len(msg):
                sent += len(msg)
        big = grpc_frame(pb.EchoMessage(payload=b"y" * (1536 * 1024)).SerializeToString())
        before = send_whole(c.request(ECHO, b"", end=False), big, False, 2)
        assert before < len(big)  # its window is spent, nothing read yet
        cid = max(c.responses)
        after = send_whole(cid, big[before:], True, 6)
        assert before + after == len(big), (before, after)
    finally:
        c.close()
    echo_ok(server.host, server.port)


def test_unfinished_messages_are_bounded_per_connection(server):
    """Many streams each holding part of a large message: the connection's
    total is capped (16 MiB); the streams past it are refused and the
    front's memory stays bounded."""
    from h2raw import H2Client, grpc_frame, read_until

    def rss():
        with open(f"/proc/{server.proc.pid}/status") as f:
            return [int(x.split()[1]) for x in f if x.startswith("VmRSS:")][0]

    before = rss()
    c = H2Client(server.host, server.port, timeout=30)
    try:
        head = grpc_frame(b"", length=4 << 20)[:5]
        sids = []
        for _ in range(40):
            sid = c.request("/remotemedia.v1.RemoteExecution/Echo", b"", end=False)
            c.send(sid, head + b"x" * (1000 * 1000))
            read_until(c, sid, 1, timeout=0.2)  # take WINDOW_UPDATEs
            sids.append(sid)
        refused = 0
        for sid in sids:
            r = c.wait(sid, timeout=0.5)
            if r.ended and r.grpc_status == 8:
                assert "unfinished messages" in r.grpc_message
                refused += 1
        assert refused >= 20
        assert SANITIZED or rss() - before < 40 * 1024  # RSS means nothing under ASan
    finally:
        c.close()
    import grpc as _grpc
    with _grpc.insecure_channel(f"{server.host}:{server.port}") as ch:
        assert ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5) == b"\x08\x01"
