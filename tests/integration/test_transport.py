"""The core transport (issue 2): gRPC over h2c done right, sessions end to
end, worker death, cleanup, flags. Real server, real client."""
from __future__ import annotations

import asyncio
import ctypes  # noqa: F401  (used inside remote objects)
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import grpc
import pytest

from clientlib import run
from h2raw import (ECHO, F_DATA, F_GOAWAY, F_HEADERS, F_PING, F_SETTINGS, HEALTH, PREFACE,
                   SESSION, H2Client, Response, echo_ok, frame, grpc_frame, open_msg, raw_frames,
                   raw_read)
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.core.exceptions import RemoteExecutionError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, ROOT


class Calc:
    def __init__(self):
        self.total = 0
        self.label = "calc"

    def add(self, a, b=0):
        self.total += a + b
        return self.total

    async def slow_add(self, a, *, b=1):
        await asyncio.sleep(0.01)
        return a + b

    @property
    def doubled(self):
        return self.total * 2

    def fail(self):
        raise ValueError("bad value 42")

    def where(self):
        return os.getcwd()

    def session(self):
        return os.environ["REMOTEMEDIA_SESSION"]

    def sleep(self, s):
        time.sleep(s)
        return s

    def segfault(self):
        import ctypes
        ctypes.string_at(0)

    def exit3(self):
        os._exit(3)


# --- gRPC over HTTP/2 -----------------------------------------------------

def test_settings_first_and_echo_trailers(server):
    c = H2Client(server.host, server.port)
    try:
        msg = pb.EchoMessage(payload=b"hello").SerializeToString()
        sid = c.request(ECHO, grpc_frame(msg) + grpc_frame(msg))
        r = c.wait(sid)
        assert r.first_frame_type == 0x4  # SETTINGS
        assert r.status == 200
        assert r.headers["content-type"] == "application/grpc"
        assert r.data == grpc_frame(msg) * 2
        assert r.trailers.get("grpc-status") == "0"  # ended by trailers
    finally:
        c.close()


def test_echo_with_grpcio(server):
    with grpc.insecure_channel(f"{server.host}:{server.port}") as ch:
        echo = ch.stream_stream(ECHO)
        reqs = [pb.EchoMessage(payload=bytes([i]) * i).SerializeToString() for i in range(50)]
        assert list(echo(iter(reqs), timeout=10)) == reqs


def test_health_check(server):
    with grpc.insecure_channel(f"{server.host}:{server.port}") as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=5) == b"\x08\x01"  # SERVING
        with pytest.raises(grpc.RpcError) as e:
            check(b"\x0a\x05other", timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_method_is_unimplemented(server):
    with grpc.insecure_channel(f"{server.host}:{server.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/remotemedia.v1.RemoteExecution/Nope")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Nope" in e.value.details()


def test_wrong_content_type_is_415(server):
    c = H2Client(server.host, server.port)
    try:
        sid = c.request(ECHO, b"x", content_type="application/json")
        assert c.wait(sid).status == 415
        sid = c.request(ECHO, b"x", content_type="application/grpcfoo")
        assert c.wait(sid).status == 415
        sid = c.request(ECHO, grpc_frame(b""), content_type="application/grpc+proto")
        assert c.wait(sid).status == 200
    finally:
        c.close()


def test_grpc_timeout_is_honoured_by_the_server(server):
    c = H2Client(server.host, server.port)
    try:
        t = time.monotonic()
        sid = c.request(ECHO, b"", extra=[("grpc-timeout", "300m")], end=False)
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        assert time.monotonic() - t < 5
    finally:
        c.close()


def test_session_grpc_timeout_kills_the_worker(server):
    c = H2Client(server.host, server.port)
    try:
        import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        op = pb.ClientMessage(open=pb.Open(
            protocol=pb.PROTOCOL_V1, object=pb.Value(data=cloudpickle.dumps(Calc())),
            python_version="%d.%d" % sys.version_info[:2],
            cloudpickle_version=cloudpickle.__version__))
        sid = c.request(SESSION, grpc_frame(op.SerializeToString()),
                        extra=[("grpc-timeout", "1S")], end=False)
        r = c.wait(sid, timeout=15)
        assert r.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    finally:
        c.close()
    server.wait_idle()


def test_lying_length_prefix_and_compressed_flag(server):
    c = H2Client(server.host, server.port)
    try:
        sid = c.request(ECHO, grpc_frame(b"abc", length=100))  # ends inside a message
        r = c.wait(sid)
        assert r.grpc_status == grpc.StatusCode.INTERNAL.value[0]
        sid = c.request(ECHO, grpc_frame(b"\x0a\x01x", compressed=True))
        r = c.wait(sid)
        assert r.grpc_status == grpc.StatusCode.INTERNAL.value[0]
        assert "compressed" in r.grpc_message
    finally:
        c.close()


def test_message_over_the_size_cap(server):
    big = grpc_frame(b"\x0a" + b"x" * 10, length=5 * 1024 * 1024)
    c = H2Client(server.host, server.port)
    try:
        sid = c.request(ECHO, big, end=False)
        r = c.wait(sid)
        assert r.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "limit of 4194304 bytes" in r.grpc_message
        # a Session message carries at most one 1 MiB chunk and its envelope
        sid = c.request(SESSION, grpc_frame(b"\x0a" + b"x" * 10, length=2 << 20), end=False)
        r = c.wait(sid)
        assert r.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "limit of 1081344 bytes" in r.grpc_message
    finally:
        c.close()
    # and through grpcio, a real 5 MiB message
    with grpc.insecure_channel(f"{server.host}:{server.port}",
                               options=[("grpc.max_send_message_length", -1)]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(ch.stream_stream(ECHO)(iter([b"\x0a" * (5 << 20)]), timeout=10))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class LoadsBadly:
    """An object whose loading on the server raises with a message that ends
    with a space."""

    def __init__(self) -> None:
        self.state = 1

    def __setstate__(self, state):
        raise ValueError("bad input ")


def test_a_status_message_never_ends_with_a_space(server):
    """RFC 9113 8.2.1: a field value must not begin or end with a space.
    python-h2 (this client) took such a grpc-message for a protocol error
    of the whole connection; grpc-js dropped the message."""
    c = H2Client(server.host, server.port)
    try:
        sid = c.request(SESSION, grpc_frame(open_msg(LoadsBadly())), end=False)
        r = c.wait(sid, 30)
        raw = r.trailers["grpc-message"]
        assert raw == raw.strip() and raw.endswith("%20"), raw
        assert r.grpc_status == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert r.grpc_message.endswith("ValueError: bad input "), r.grpc_message
    finally:
        c.close()
    server.wait_idle()


def test_a_method_other_than_post_is_405_with_allow(server):
    c = H2Client(server.host, server.port)
    try:
        for method in ("GET", "PUT"):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", method), (":scheme", "http"),
                                      (":authority", "x"), (":path", ECHO),
                                      ("content-type", "application/grpc"),
                                      ("te", "trailers")], end_stream=True)
            c.responses[sid] = Response()
            c.sock.sendall(c.conn.data_to_send())
            r = c.wait(sid, 10)
            assert r.status == 405 and r.headers.get("allow") == "POST", (method, r.headers)
    finally:
        c.close()


def test_first_message_must_be_open(server):
    with grpc.insecure_channel(f"{server.host}:{server.port}") as ch:
        call = ch.stream_stream(SESSION)
        msg = pb.ClientMessage(call=pb.Call(call_id=1, name="x")).SerializeToString()
        with pytest.raises(grpc.RpcError) as e:
            list(call(iter([msg]), timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Open" in e.value.details()
    server.wait_idle()


# --- sessions end to end ----------------------------------------------------

def test_calls_attributes_and_exceptions(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            calc = await client.create_proxy(Calc())
            assert await calc.add(1, 2) == 3
            assert await calc.add(4, b=5) == 12
            assert await calc.slow_add(1, b=41) == 42
            assert await calc.total == 12
            assert await calc.doubled == 24
            assert await calc.label == "calc"
            with pytest.raises(RemoteExecutionError) as e:
                await calc.fail()
            assert e.value.remote_type == "ValueError"
            assert "bad value 42" in str(e.value)
            assert "in fail" in e.value.remote_traceback
            assert isinstance(e.value, ValueError)
            where = await calc.where()
            assert where.startswith(os.path.join(server.state_dir, "sessions"))
            assert os.path.isdir(where)
            return where
    where = run(main())
    server.wait_idle()
    assert not os.path.exists(where)


def test_two_sessions_are_separate_workers(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            a = await client.create_proxy(Calc())
            b = await client.create_proxy(Calc())
            await a.add(5)
            assert await b.total == 0
            assert await a.session() != await b.session()
            assert await a.where() != await b.where()
            assert server.worker_pid_of(await a.session()) != \
                server.worker_pid_of(await b.session())
    run(main())
    server.wait_idle()


def test_bogus_requirement_is_refused_before_any_worker(server):
    async def main():
        async with RemoteProxyClient(server.config(pip_packages=["-r /etc/shadow"])) as client:
            with pytest.raises(RemoteExecutionError) as e:
                await client.create_proxy(Calc())
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "options are not allowed" in str(e.value)
    run(main())
    server.wait_idle()


# --- worker death -------------------------------------------------------------

def test_worker_sigkill_leaves_other_sessions_alone(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            victim = await client.create_proxy(Calc())
            other = await client.create_proxy(Calc())
            os.kill(server.worker_pid_of(await victim.session()), signal.SIGKILL)
            with pytest.raises(RemoteExecutionError) as e:
                await victim.add(1)
            assert e.value.code == grpc.StatusCode.ABORTED
            assert "worker killed by signal 9" in str(e.value)
            assert await other.add(2) == 2
    run(main())
    server.wait_idle()


@pytest.mark.parametrize("method,text", [
    pytest.param("segfault", "worker killed by signal 11",
                 marks=pytest.mark.skipif(
                     os.environ.get("RM_SANITIZED") == "1",
                     reason="ASan catches the SIGSEGV, reports it and "
                            "aborts")),
    ("exit3", "worker exited with status 3"),
])
def test_worker_death_is_aborted_with_how_it_died(server, method, text):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            calc = await client.create_proxy(Calc())
            other = await client.create_proxy(Calc())
            with pytest.raises(RemoteExecutionError) as e:
                await getattr(calc, method)()
            assert e.value.code == grpc.StatusCode.ABORTED
            assert text in str(e.value)
            assert await other.add(1) == 1
    run(main())
    server.wait_idle()


def test_client_that_vanishes_mid_call(server):
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT / 'python')!r})
        from remotemedia.remote import RemoteProxyClient
        from remotemedia.core.node import RemoteExecutorConfig
        class Sleeper:
            def sleep(self):
                import time
                time.sleep(60)
        async def main():
            async with RemoteProxyClient(RemoteExecutorConfig(host={server.host!r}, port={server.port})) as c:
                p = await c.create_proxy(Sleeper())
                print("calling", flush=True)
                await p.sleep()
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"calling"
        deadline = time.monotonic() + 10
        while not server.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.worker_pids()
        time.sleep(0.2)
        proc.kill()
    finally:
        proc.wait()
    server.wait_idle()


# --- the server process -----------------------------------------------------

def test_sigterm_closes_sessions_and_removes_directories(fresh_server):
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            calc = await client.create_proxy(Calc())
            assert await calc.add(1) == 1
            assert srv.session_dirs() and srv.worker_pids()
            pids = srv.worker_pids()
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(timeout=10) == 0
            with pytest.raises(RemoteExecutionError):
                await calc.add(1)
            return pids
    pids = run(main())
    assert srv.session_dirs() == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_sigterm_drain_finishes_open_streams_and_answers_new_ones(fresh_server):
    """RFC 9113 6.8. GOAWAY comes first as a notice (last stream id 2^31-1),
    the final one a round trip later. An Echo stream open at SIGTERM is
    still answered, trailers and all; a Health check that comes meanwhile
    says NOT_SERVING, and a new Session is refused with UNAVAILABLE. (A
    raw connection: python-h2 sends nothing once it has seen a GOAWAY.)"""
    from hpack import Decoder, Encoder

    srv = fresh_server()
    enc, dec = Encoder(), Decoder()

    def request(sid: int, path: str) -> bytes:
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                            (":path", path), ("content-type", "application/grpc"),
                            ("te", "trailers")])
        return frame(F_HEADERS, 0x4, sid, block)  # END_HEADERS

    def answers(frames) -> dict:
        out: dict = {}
        for ftype, flags, sid, payload in frames:
            if ftype == F_HEADERS:
                out.setdefault(sid, {"data": b""}).update(dict(dec.decode(payload)))
            elif ftype == F_DATA:
                out.setdefault(sid, {"data": b""})["data"] += payload
        return out

    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    try:
        sock.sendall(PREFACE + frame(F_SETTINGS, 0, 0) + request(1, ECHO))
        got, _ = raw_read(sock, 0.3)
        frames = raw_frames(got)
        srv.proc.send_signal(signal.SIGTERM)
        got, _ = raw_read(sock, 3.0)
        frames += raw_frames(got)
        goaways = [int.from_bytes(p[:4], "big") & 0x7FFFFFFF
                   for t, _, _, p in frames if t == F_GOAWAY]
        assert goaways[:1] == [2**31 - 1], frames
        health = pb.EchoMessage(payload=b"after").SerializeToString()
        sock.sendall(request(3, HEALTH) + frame(F_DATA, 0x1, 3, grpc_frame(b"")) +
                     request(5, SESSION) +
                     frame(F_DATA, 0x1, 1, grpc_frame(health)))
        got, _ = raw_read(sock, 3.0, stop_on_goaway=False)
        frames += raw_frames(got)
        by_stream = answers(frames)
        assert by_stream[1].get("grpc-status") == "0", by_stream
        assert grpc_frame(health) == by_stream[1]["data"], by_stream
        assert by_stream[3].get("grpc-status") == "0", by_stream
        assert by_stream[3]["data"] == grpc_frame(b"\x08\x02"), by_stream  # NOT_SERVING
        assert by_stream[5].get("grpc-status") == str(grpc.StatusCode.UNAVAILABLE.value[0])
        assert "shutting down" in by_stream[5].get("grpc-message", ""), by_stream
        goaways = [int.from_bytes(p[:4], "big") & 0x7FFFFFFF
                   for t, _, _, p in frames if t == F_GOAWAY]
        assert len(goaways) == 2 and goaways[1] == 5, goaways  # the final one
    finally:
        sock.close()
    assert srv.proc.wait(timeout=15) == 0


def test_sigterm_does_not_wait_for_a_stream_only_its_client_would_end(fresh_server):
    """A Health stream whose request never comes holds no session: at the
    final GOAWAY it is ended with UNAVAILABLE, and the server exits then,
    not after the drain's grace (10 s) and the hard stop (5 s)."""
    from hpack import Decoder, Encoder

    srv = fresh_server(["--sandbox", "off", "--session-pool", "0"])
    block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                              (":path", HEALTH), ("content-type", "application/grpc"),
                              ("te", "trailers")])
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    try:
        # A PING behind the HEADERS: its ACK says the stream was taken.
        sock.sendall(PREFACE + frame(F_SETTINGS, 0, 0) + frame(F_HEADERS, 0x4, 1, block) +
                     frame(F_PING, 0, 0, b"\0" * 8))
        acked, t0 = b"", time.monotonic()
        while not any(t == F_PING and flags & 1 for t, flags, _, _ in raw_frames(acked)):
            assert time.monotonic() - t0 < 10, raw_frames(acked)
            acked += raw_read(sock, 0.1)[0]
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        got = b""
        while time.monotonic() - t0 < 8:
            more, closed = raw_read(sock, 0.5, stop_on_goaway=False)
            got += more
            if closed:
                break
        assert srv.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 8, "the drain waited for the stream"
        dec = Decoder()
        headers = [dict(dec.decode(p)) for t, _, sid, p in raw_frames(got)
                   if t == F_HEADERS and sid == 1]
        assert any(h.get("grpc-status") == "14" for h in headers), headers
    finally:
        sock.close()


def test_leftover_session_directories_are_removed_at_start(fresh_server, tmp_path):
    state = tmp_path / "state"
    (state / "sessions" / "deadbeef").mkdir(parents=True)
    (state / "sessions" / "deadbeef" / "junk").write_text("x")
    srv = fresh_server(["--state-dir", str(state)])
    assert srv.session_dirs() != ["deadbeef"]
    assert not (state / "sessions" / "deadbeef").exists()


@pytest.mark.parametrize("shared", ["--state-dir", "--env-cache-dir"])
def test_a_second_server_on_the_same_directory_is_refused(fresh_server, tmp_path, shared):
    """At start a server removes what it takes for leftovers (session
    directories, half-built environments): a second server on the same
    state or cache directory removed the first's live ones. It now stops,
    naming the option, and the first goes on serving."""
    own = {"--state-dir": str(tmp_path / "own-state"), "--env-cache-dir": str(tmp_path / "own-envs")}
    dirs = {"--state-dir": str(tmp_path / "state"), "--env-cache-dir": str(tmp_path / "envs")}
    first = fresh_server(["--sandbox", "off", "--state-dir", dirs["--state-dir"],
                          "--env-cache-dir", dirs["--env-cache-dir"]])
    args = ["--state-dir", own["--state-dir"], "--env-cache-dir", own["--env-cache-dir"]]
    args[args.index(shared) + 1] = dirs[shared]
    p = subprocess.run([str(BUILD / "remotemediad"), "--sandbox", "off", "--listen",
                        "127.0.0.1:0"] + args, capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert f"{shared} {dirs[shared]} is in use by another remotemediad" in p.stderr, p.stderr
    assert first.proc.poll() is None
    echo_ok(first.host, first.port)


@pytest.mark.parametrize("args,flag", [
    (["--bogus"], "--bogus"),
    (["--listen", "nowhere"], "--listen"),
    (["--log-level", "loud"], "--log-level"),
    (["--state-dir", "relative"], "--state-dir"),
    (["--listen"], "--listen"),
])
def test_usage_errors_exit_2_and_name_the_flag(args, flag):
    p = subprocess.run([str(BUILD / "remotemediad")] + args, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2
    assert flag in p.stderr


def test_help_lists_the_flags():
    p = subprocess.run([str(BUILD / "remotemediad"), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0
    for flag in ("--listen", "--state-dir", "--worker", "--log-level"):
        assert flag in p.stderr + p.stdout


def test_sigterm_drains_running_calls_complete(fresh_server):
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config(max_retries=0)) as client:
            busy = await client.create_proxy(Calc())
            idle = await client.create_proxy(Calc())
            assert await idle.add(1) == 1
            running = asyncio.ensure_future(busy.sleep(1.5))
            await asyncio.sleep(0.3)
            srv.proc.send_signal(signal.SIGTERM)
            assert await running == 1.5  # the running call completed
            with pytest.raises(RemoteExecutionError):
                await idle.add(1)  # closed by the drain
        async with RemoteProxyClient(srv.config(max_retries=0, timeout=5)) as client:
            with pytest.raises(Exception):
                await client.create_proxy(Calc())  # no new sessions
    run(main())
    assert srv.proc.wait(timeout=15) == 0
    assert srv.session_dirs() == []
    assert "GOAWAY" in srv.log_text() or "shutting down" in srv.log_text()
