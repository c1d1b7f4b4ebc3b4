"""rmctl against a server that breaks the protocol: a fake HTTP/2 server
(python-h2) answers each scenario, and rmctl must end at once, with the
documented exit code (13: the server broke the protocol; 4: a deadline)
and a message that cannot drive the terminal.

Run: PYTHONPATH=python:tests/lib /usr/bin/python3 -m pytest -q \
    tests/integration/test_rmctl_hostile.py
"""
from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from remotemedia._proto import remotemedia_pb2 as pb
from serverlib import BUILD

RMCTL = str(BUILD / "rmctl")


def grpc_msg(body: bytes) -> bytes:
    return struct.pack(">BI", 0, len(body)) + body


class FakeServer:
    """One connection at a time; scenario(conn, sock) answers it."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.lsn = socket.socket()
        self.lsn.bind(("127.0.0.1", 0))
        self.lsn.listen(4)
        self.port = self.lsn.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            sock, _ = self.lsn.accept()
        except OSError:
            return
        sock.settimeout(10)
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        conn = h2.connection.H2Connection(cfg)
        try:
            self.scenario(Peer(conn, sock))
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            sock.close()

    def close(self):
        self.lsn.close()
        self.thread.join(timeout=10)


class Peer:
    def __init__(self, conn, sock):
        self.conn, self.sock = conn, sock
        self.sid = None
        self.body = b""

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def start(self):
        self.conn.initiate_connection()
        self.flush()

    def pump(self):
        data = self.sock.recv(65536)
        if not data:
            raise OSError("closed")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.sid = ev.stream_id
            elif isinstance(ev, h2.events.DataReceived):
                self.body += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.flush()

    def message(self) -> bytes:
        """The client's next gRPC message on the stream."""
        while len(self.body) < 5 or len(self.body) < 5 + struct.unpack(">I", self.body[1:5])[0]:
            self.pump()
        n = struct.unpack(">I", self.body[1:5])[0]
        msg, self.body = self.body[5:5 + n], self.body[5 + n:]
        return msg

    def headers(self, ctype=b"application/grpc", status=b"200"):
        self.conn.send_headers(self.sid, [(b":status", status), (b"content-type", ctype)])
        self.flush()

    def send(self, body: bytes):
        self.conn.send_data(self.sid, grpc_msg(body))
        self.flush()

    def reply(self, **kw):
        """A ServerMessage of kw, as one gRPC message."""
        self.send(pb.ServerMessage(**kw).SerializeToString())

    def take_call(self):
        """Open rmctl run's session (Ready: one method, f) and read its Call."""
        self.start()
        self.message()  # Open
        self.headers()
        ready = pb.Ready(session_id="fake")
        ready.attributes["f"] = pb.ATTR_METHOD
        self.reply(ready=ready)
        self.message()  # Call

    def trailers(self, status=b"0", message=None):
        t = [(b"grpc-status", status)] + ([(b"grpc-message", message)] if message else [])
        self.conn.send_headers(self.sid, t, end_stream=True)
        self.flush()

    def linger(self, secs=10.0):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                self.pump()
            except (OSError, socket.timeout):
                return


def run_rmctl(scenario, *args, timeout_s="10s"):
    srv = FakeServer(scenario)
    t0 = time.monotonic()
    try:
        r = subprocess.run([RMCTL, "--host", "127.0.0.1", "--port", str(srv.port),
                            "--timeout", timeout_s, *args],
                           capture_output=True, timeout=60)
    finally:
        srv.close()
    return r, time.monotonic() - t0


def invalid_status(p):
    p.start()
    p.message()
    p.headers(status=b"2000")  # not a status: nghttp2 resets the stream
    p.send(b"")
    p.trailers()
    p.linger()


def test_an_invalid_response_ends_at_once_not_at_the_deadline():
    """nghttp2 resets the stream of a response it finds invalid as it
    writes the RST_STREAM; rmctl looked before that write, then waited out
    its whole --timeout (10 minutes for run) and called it a timeout."""
    r, took = run_rmctl(invalid_status, "health")
    assert r.returncode == 13, r
    assert took < 5, took


def tiny_frames(p):
    p.sock.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + struct.pack(">HI", 5, 100))
    p.linger(5)


def test_a_protocol_error_rmctl_finds_is_13_with_its_reason():
    """A SETTINGS_MAX_FRAME_SIZE of 100: rmctl's nghttp2 ends the
    connection with GOAWAY PROTOCOL_ERROR. It said the server closed the
    connection (exit 14)."""
    r, _ = run_rmctl(tiny_frames, "health")
    assert r.returncode == 13, r
    err = r.stderr.decode()
    assert "rmctl ended the connection (GOAWAY PROTOCOL_ERROR)" in err, err
    assert "SETTINGS_MAX_FRAME_SIZE" in err, err


def escaping_status(p):
    p.start()
    p.message()
    p.headers()
    p.trailers(status=b"7", message=b"x%1B[2J%C2%9B%9Bevil%00end")
    p.linger(2)


def test_server_text_cannot_drive_the_terminal():
    """A grpc-message with escape sequences (ESC, and C1's CSI) and a %00
    prints as '?' and goes on."""
    r, _ = run_rmctl(escaping_status, "health")
    assert r.returncode == 7, r
    err = r.stderr
    assert b"\x1b" not in err and b"\xc2\x9b" not in err and b"\x9b" not in err, err
    assert b"evil?end" in err, err


def garbage_echo(p):
    p.start()
    p.message()
    p.headers()
    p.send(b"\xff\xff\xff")
    p.linger(5)


def test_a_reply_that_is_not_an_echo_is_13():
    r, _ = run_rmctl(garbage_echo, "echo", "--count", "1")
    assert r.returncode == 13, r
    assert b"malformed EchoMessage" in r.stderr, r.stderr


def output_forever(p):
    p.take_call()
    end = time.monotonic() + 20
    while time.monotonic() < end:
        p.reply(output=pb.Output(data=b"."))
        time.sleep(0.1)


def run_args(tmp_path) -> list[str]:
    """rmctl run's arguments: a class C whose method f rmctl calls."""
    src = tmp_path / "c.py"
    src.write_text("class C:\n    def f(self):\n        return 1\n")
    return ["run", "--source", str(src), "--class", "C", "--call", "f"]


def test_output_does_not_keep_run_waiting_for_ever(tmp_path):
    """Each Output restarted run's wait: a server that printed for ever
    held rmctl for ever. Only Progress (a build) restarts it now."""
    r, took = run_rmctl(output_forever, *run_args(tmp_path), timeout_s="2s")
    assert r.returncode == 4, r
    assert took < 10, took


def answer_wrongly(how):
    def scenario(p):
        p.take_call()
        if how == "call_id":
            p.reply(result=pb.Result(
                call_id=777, value=pb.Value(call_id=777, data=b'"not yours"')))
        else:  # chunk 2 where 1 is due
            p.reply(result=pb.Result(
                call_id=1, value=pb.Value(call_id=1, data=b"[1,", more=True)))
            p.reply(value=pb.Value(call_id=1, seq=2, data=b"2]"))
        p.linger(5)
    return scenario


@pytest.mark.parametrize("how,says", [
    ("call_id", b"run: a Result for call 777, not the call made (1)"),
    ("seq", b"run: chunk 2 of a value came where 1 was due"),
])
def test_run_refuses_answers_that_are_not_for_its_call(tmp_path, how, says):
    """A Result for another call id, or a value's chunks out of order, were
    printed as the answer, exit 0."""
    r, _ = run_rmctl(answer_wrongly(how), *run_args(tmp_path))
    assert r.returncode == 13, r
    assert says in r.stderr, r.stderr
    assert r.stdout == b"", r.stdout
