"""The front's connection and stream limits, one test per flag, through a raw
HTTP/2 client (h2raw) or the real client: --max-sessions,
--max-sessions-per-token, --max-streams, --max-message-size,
--max-header-list-size, --max-value-size, --max-inflight-calls,
--handshake-timeout, --idle-timeout, --max-ping-rate.

Each test checks that the limit bites with the status the client should see
(RESOURCE_EXHAUSTED naming the flag, or for HTTP/2 settings the HTTP/2
mechanism: REFUSED_STREAM, RST_STREAM, GOAWAY), and that nothing else is
hurt: a neighbour session or a second connection keeps working.

--max-connections refuses each RPC on a connection over it with
RESOURCE_EXHAUSTED, then closes that connection.

The raw-HTTP/2 helpers are tests/lib/h2raw.py's.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q tests/integration/test_limits_h2.py
"""
from __future__ import annotations

import asyncio
import select
import socket
import struct
import time

import grpc
import h2.events
import pytest
from h2.connection import ConnectionState
from h2.settings import SettingCodes

from clientlib import run
from h2raw import (
    ECHO, ENHANCE_YOUR_CALM, HEALTH, NO_ERROR, OK, PREFACE, PROTOCOL_ERROR, SESSION,
    REFUSED_STREAM, RESOURCE_EXHAUSTED, H2Client, call_msgs, call_result,
    closed_within, echo_ok, grpc_frame, is_end, open_session, pump,
    split_grpc, wait_msgs,
)
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.core.exceptions import RemoteExecutionError, RemoteMediaError
from remotemedia.remote import RemoteProxyClient
from serverlib import wait_for
from targets import Sleeper

# Tests that need real workers but test the front run them unconfined: a
# sandboxed session takes seconds to start, an unconfined one a fraction.
FAST = ["--sandbox", "off"]

TOKEN_A = "alice-token-0123456789abcdef"
TOKEN_B = "bob-token-0123456789abcdef00"


# --- --max-sessions, --max-sessions-per-token ------------------------------

def test_max_sessions_refuses_the_third_session_naming_the_flag(fresh_server):
    srv = fresh_server(FAST + ["--max-sessions", "2"])

    async def main():
        async with RemoteProxyClient(srv.config(max_retries=0)) as client:
            a = await client.create_proxy(Sleeper())
            b = await client.create_proxy(Sleeper())
            with pytest.raises(RemoteExecutionError) as e:
                await client.create_proxy(Sleeper())
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-sessions" in str(e.value) and "2" in str(e.value)
            # The two sessions that run are not hurt ...
            assert await a.ping() == "pong"
            assert await b.ping() == "pong"
            # ... and a slot freed is a slot to be had again.
            await client.close_proxy(b)
            deadline = time.monotonic() + 10
            while True:
                try:
                    c = await client.create_proxy(Sleeper())
                    break
                except RemoteExecutionError as err:  # b's worker still being reaped
                    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "the freed slot never came back"
                    await asyncio.sleep(0.1)
            assert await c.ping() == "pong"
            assert await a.ping() == "pong"
    run(main())
    echo_ok(srv.host, srv.port)
    srv.wait_idle(timeout=20)


# --- --max-connections --------------------------------------------------------

def test_max_connections_refuses_rpcs_on_one_more_naming_the_flag(fresh_server):
    srv = fresh_server(FAST + ["--max-connections", "2"])
    held = [H2Client(srv.host, srv.port) for _ in range(2)]
    try:
        for c in held:
            echo_ok(srv.host, srv.port, c=c)
        # A third connection: each client sees the limit by name, fast.
        with grpc.insecure_channel(f"{srv.host}:{srv.port}") as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(HEALTH)(b"", timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-connections" in e.value.details()
            assert time.monotonic() - t0 < 5

        async def python_client():
            async with RemoteProxyClient(srv.config(max_retries=0, timeout=10)) as client:
                with pytest.raises(RemoteExecutionError) as e:
                    await client.create_proxy(Sleeper())
                assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--max-connections" in str(e.value) and "2" in str(e.value)
        run(python_client())

        # A raw one: the status, then GOAWAY; the server reads on until the
        # client closes, and then lets the connection go.
        extra = H2Client(srv.host, srv.port)
        peer = "%s:%d" % extra.sock.getsockname()[:2]
        try:
            r = extra.wait(extra.request(ECHO, grpc_frame(b"")), timeout=10)
            assert r.grpc_status == RESOURCE_EXHAUSTED, r
            if extra.conn.state_machine.state != ConnectionState.CLOSED:
                pump(extra, 5, until=lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
            assert extra.conn.state_machine.state == ConnectionState.CLOSED  # GOAWAY came
        finally:
            extra.close()
        wait_for(lambda: f"{peer}: connection closed" in srv.log_text(), 10,
                 "the front to see the refused client close")
        assert f"{peer}: refused, not done" not in srv.log_text()
        # The connections within the limit are not hurt ...
        for c in held:
            echo_ok(srv.host, srv.port, c=c)
        # ... and a connection that ends makes room for the next.
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            c = H2Client(srv.host, srv.port)
            try:
                r = c.wait(c.request(HEALTH, grpc_frame(b"")), timeout=10)
            finally:
                c.close()
            if r.grpc_status == OK:
                break
            assert r.grpc_status == RESOURCE_EXHAUSTED, r
            assert time.monotonic() < deadline, "the freed connection never made room"
            time.sleep(0.1)
        assert "--max-connections" in srv.log_text()
    finally:
        for c in held:
            c.close()


def test_a_flood_past_max_connections_holds_a_bounded_number(fresh_server):
    """Connections over the limit that say nothing: the front holds at most
    64 of them, each for two seconds, and closes the rest at once; when
    the flood and the held connection go, a client is served again."""
    srv = fresh_server(FAST + ["--max-connections", "1"])
    held = H2Client(srv.host, srv.port)
    echo_ok(srv.host, srv.port, c=held)
    base = srv.sockets()
    flood = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(150)]
    try:
        # Each gets the server's SETTINGS and is held, or is closed at once.
        told = closed = 0
        for s in flood:
            ready, _, _ = select.select([s], [], [], 10)
            assert ready, "the front neither spoke on nor closed a connection"
            try:
                got = s.recv(65536, socket.MSG_PEEK)
            except ConnectionResetError:
                got = b""
            told, closed = told + bool(got), closed + (not got)
        assert (told, closed) == (64, 150 - 64)
        assert srv.sockets() <= base + 64
        # Those held go within their two seconds, never sent a word.
        assert all(closed_within(s, 10) is not None for s in flood)
        wait_for(lambda: srv.sockets() <= base, 10, "the front to let them go")
    finally:
        for s in flood:
            s.close()
    echo_ok(srv.host, srv.port, c=held)
    held.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            echo_ok(srv.host, srv.port)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "no connection was served again"
            time.sleep(0.1)


def test_max_sessions_per_token_refuses_the_same_token_only(fresh_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN_A}\nbob:{TOKEN_B}\n")
    tokens.chmod(0o600)
    srv = fresh_server(FAST + ["--token-file", str(tokens),
                        "--max-sessions-per-token", "1"])

    async def main():
        async with RemoteProxyClient(srv.config(auth_token=TOKEN_A, max_retries=0)) as alice, \
                RemoteProxyClient(srv.config(auth_token=TOKEN_B, max_retries=0)) as bob:
            a1 = await alice.create_proxy(Sleeper())
            with pytest.raises(RemoteExecutionError) as e:
                await alice.create_proxy(Sleeper())
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-sessions-per-token" in str(e.value)
            assert "alice" in str(e.value) and TOKEN_A not in str(e.value)
            b1 = await bob.create_proxy(Sleeper())  # another token: fine
            assert await b1.ping() == "pong"
            assert await a1.ping() == "pong"
    run(main())
    srv.wait_idle(timeout=20)


# --- --max-streams -----------------------------------------------------------

def test_max_streams_is_advertised_and_a_fourth_stream_is_refused(fresh_server):
    """Four streams sent before the client read SETTINGS: nghttp2 refuses the
    fourth with RST_STREAM(REFUSED_STREAM); the other three are served."""
    srv = fresh_server(["--max-streams", "3"])
    c = H2Client(srv.host, srv.port)
    try:
        sids = [c.request(ECHO, b"", end=False) for _ in range(4)]
        pump(c, 3, until=lambda ev: isinstance(ev, h2.events.StreamReset))
        assert c.conn.remote_settings.max_concurrent_streams == 3
        assert c.responses[sids[3]].reset == REFUSED_STREAM, c.responses[sids[3]]
        for i, sid in enumerate(sids[:3]):
            msg = pb.EchoMessage(payload=b"n%d" % i).SerializeToString()
            c.send(sid, grpc_frame(msg), end=True)
        for i, sid in enumerate(sids[:3]):
            r = c.wait(sid, timeout=10)
            assert r.reset is None and r.grpc_status == OK, r
            assert pb.EchoMessage.FromString(split_grpc(r.data)[0]).payload == b"n%d" % i
        echo_ok(srv.host, srv.port, c=c)  # the slots are free again
    finally:
        c.close()
    echo_ok(srv.host, srv.port)


def test_a_client_past_max_streams_opens_another_connection(fresh_server):
    """Ready.limits.max_streams says how many sessions one connection takes;
    a RemoteProxyClient opens the next ones on another connection of its
    own, and each of them works. (It waited out its timeout for a slot.)"""
    srv = fresh_server(FAST + ["--max-streams", "3"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30.0)) as client:
            first = await client.create_proxy(Sleeper())  # says the bound
            more = await asyncio.gather(*(client.create_proxy(Sleeper()) for _ in range(7)))
            proxies = [first, *more]
            assert [await p.size(b"x" * i) for i, p in enumerate(proxies)] == list(range(8))
            assert len(client._conns) == 3
            # A closed session's slot is taken again before a new connection.
            await client.close_proxy(more[0])
            again = await client.create_proxy(Sleeper())
            assert await again.size(b"ab") == 2 and len(client._conns) == 3
    run(main())


def test_a_session_streams_headers_say_max_streams_before_any_message(fresh_server):
    """The response headers of a Session stream come at its start, before
    the client sent anything, and say the connection's bound."""
    srv = fresh_server(FAST + ["--max-streams", "7"])

    async def main():
        async with grpc.aio.insecure_channel(f"{srv.host}:{srv.port}") as ch:
            call = ch.stream_stream("/remotemedia.v1.RemoteExecution/Session")()
            headers = await asyncio.wait_for(call.initial_metadata(), 10)
            assert ("remotemedia-max-streams", "7") in list(headers)
            call.cancel()
    run(main())


def test_the_bound_in_the_headers_is_the_one_sent_before_its_ack(fresh_server):
    """A stream sent before the client acknowledged the server's SETTINGS:
    its headers say the bound those SETTINGS carry (nghttp2 itself knows
    acknowledged settings only, and would say its default, 2^32-1)."""
    srv = fresh_server(FAST + ["--max-streams", "3"])
    c = H2Client(srv.host, srv.port)
    try:
        sid = c.request(SESSION, b"", end=False)
        pump(c, 10, until=lambda ev: isinstance(ev, h2.events.ResponseReceived))
        assert c.responses[sid].headers.get("remotemedia-max-streams") == "3", c.responses[sid]
    finally:
        c.close()


def test_a_burst_of_sessions_on_a_new_client_spreads_over_connections(fresh_server):
    """Thirty create_proxy at once on a new client, with --max-streams 10:
    the first stream's headers say the bound before any Ready, so the
    client opens the rest on connections of its own, and none waits in
    gRPC's queue for a stream that would end only with its session."""
    srv = fresh_server(FAST + ["--max-streams", "10"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30.0)) as client:
            proxies = await asyncio.gather(*(client.create_proxy(Sleeper()) for _ in range(30)))
            assert [await p.size(b"x" * i) for i, p in enumerate(proxies)] == list(range(30))
            assert len(client._conns) == 3
    run(main())


def test_sighup_tells_open_connections_the_new_max_streams(fresh_server, tmp_path):
    """A connection opened before a SIGHUP that changes --max-streams gets
    SETTINGS with the new bound, which the Ready of a session on it states."""
    import signal
    conf = tmp_path / "rm.conf"
    conf.write_text("max-streams = 3\n")
    srv = fresh_server(FAST + ["--config", str(conf)])
    c = H2Client(srv.host, srv.port)
    try:
        pump(c, 0.5, until=lambda ev: isinstance(ev, h2.events.SettingsAcknowledged))
        assert c.conn.remote_settings.max_concurrent_streams == 3
        conf.write_text("max-streams = 6\n")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while c.conn.remote_settings.max_concurrent_streams != 6:
            assert time.monotonic() < deadline, srv.log_text()[-2000:]
            pump(c, 0.2)
        echo_ok(srv.host, srv.port, c=c)
        # A lower bound holds for new connections only: a client that keeps
        # to its last Ready's would wait for a stream on this one.
        conf.write_text("max-streams = 2\n")
        n = srv.log_text().count("SIGHUP: --max-streams")
        srv.proc.send_signal(signal.SIGHUP)
        while srv.log_text().count("SIGHUP: --max-streams") == n:
            assert time.monotonic() < deadline + 10, srv.log_text()[-2000:]
            time.sleep(0.05)
        pump(c, 0.3)
        assert c.conn.remote_settings.max_concurrent_streams == 6
        fresh = H2Client(srv.host, srv.port)
        try:
            pump(fresh, 0.5, until=lambda ev: isinstance(ev, h2.events.SettingsAcknowledged))
            assert fresh.conn.remote_settings.max_concurrent_streams == 2
        finally:
            fresh.close()
    finally:
        c.close()


def test_max_streams_ignored_after_its_ack_ends_that_connection_only(fresh_server):
    """A client that acknowledged SETTINGS(3) and still opens a fourth stream
    breaks the protocol: nghttp2 answers GOAWAY(PROTOCOL_ERROR). Another
    connection is not affected."""
    srv = fresh_server(["--max-streams", "3"])
    other = H2Client(srv.host, srv.port)
    c = H2Client(srv.host, srv.port)
    try:
        pump(c, 0.5, until=lambda ev: isinstance(ev, h2.events.SettingsAcknowledged))
        assert c.conn.remote_settings.max_concurrent_streams == 3
        for _ in range(3):
            c.request(ECHO, b"", end=False)
        # Pretend the limit were higher, so that h2 lets us break it.
        c.conn.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
        c.conn.remote_settings.acknowledge()
        c.request(ECHO, b"", end=False)
        events, closed = pump(c, 5, until=lambda ev: isinstance(
            ev, (h2.events.ConnectionTerminated, h2.events.StreamReset)))
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        reset = [ev for ev in events if isinstance(ev, h2.events.StreamReset)]
        assert (term and term[0].error_code == PROTOCOL_ERROR) or \
            (reset and reset[0].error_code in (REFUSED_STREAM, PROTOCOL_ERROR)), events
        echo_ok(srv.host, srv.port, c=other)
    finally:
        c.close()
        other.close()


# --- --max-message-size --------------------------------------------------------

def test_max_message_size_refuses_a_larger_echo_message(fresh_server):
    srv = fresh_server(["--max-message-size", "64K"])
    c = H2Client(srv.host, srv.port)
    try:
        big = pb.EchoMessage(payload=b"x" * (100 << 10)).SerializeToString()
        sid = c.request(ECHO, grpc_frame(big))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED, r
        assert f"received message of {len(big)} bytes" in r.grpc_message
        assert "limit of 65536 bytes" in r.grpc_message
        # Just under the limit passes, on the same connection and another.
        echo_ok(srv.host, srv.port, payload=b"y" * (60 << 10), c=c)
        echo_ok(srv.host, srv.port, payload=b"y" * (60 << 10))
    finally:
        c.close()


def test_health_and_admin_requests_over_their_own_limit_say_so(server):
    """Their cap is 1 KiB whatever --max-message-size is; the refusal says
    that, not what a Session message carries."""
    c = H2Client(server.host, server.port)
    try:
        for path in ("/grpc.health.v1.Health/Check", "/remotemedia.v1.Admin/Info"):
            r = c.wait(c.request(path, grpc_frame(b"\x0a\x80\x10" + b"s" * 2048)))
            assert r.grpc_status == RESOURCE_EXHAUSTED, r
            assert r.grpc_message == ("received message of 2051 bytes is larger than the "
                                      "limit of 1024 bytes (a Health or Admin request is "
                                      "small)"), r.grpc_message
    finally:
        c.close()


def test_max_message_size_refusal_names_the_flag(fresh_server):
    srv = fresh_server(["--max-message-size", "64K"])
    c = H2Client(srv.host, srv.port)
    try:
        big = pb.EchoMessage(payload=b"x" * (100 << 10)).SerializeToString()
        sid = c.request(ECHO, grpc_frame(big))
        r = c.wait(sid, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED, r
        assert "--max-message-size" in r.grpc_message, r.grpc_message
    finally:
        c.close()


# --- --max-header-list-size ----------------------------------------------------

def test_max_header_list_size_resets_an_oversized_request(fresh_server):
    srv = fresh_server(["--max-header-list-size", "4K"])
    c = H2Client(srv.host, srv.port)
    try:
        pump(c, 0.5, until=lambda ev: isinstance(ev, h2.events.SettingsAcknowledged))
        assert c.conn.remote_settings.max_header_list_size == 4096
        msg = grpc_frame(pb.EchoMessage(payload=b"z").SerializeToString())
        sid = c.request(ECHO, msg, extra=[("x-custom", "h" * 8192)])
        events, closed = pump(c, 5, until=is_end)
        r = c.responses[sid]
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        assert r.reset is not None or term or closed, (events, r)
        assert r.grpc_status is None and not r.data, "the request was served"
    finally:
        c.close()
    echo_ok(srv.host, srv.port)  # a normal request on a new connection
    assert srv.proc.poll() is None


# --- --max-value-size -------------------------------------------------------------

def test_max_value_size_through_the_real_client(fresh_server):
    """The real client learns the limit from Ready and refuses a 3 MiB
    argument itself; when it does not (an older or foreign client), the front
    ends that session with RESOURCE_EXHAUSTED naming --max-value-size, and a
    neighbour session on the same connection is not hurt."""
    srv = fresh_server(FAST + ["--max-value-size", "1M"])
    three = b"v" * (3 << 20)

    async def main():
        async with RemoteProxyClient(srv.config(max_retries=0)) as client:
            victim = await client.create_proxy(Sleeper())
            neighbour = await client.create_proxy(Sleeper())
            with pytest.raises(ValueError, match="1048576"):
                await victim.size(three)
            assert await victim.size(b"ok") == 2  # refused locally: session intact
            victim._rm_session._max_value = 0  # a client that does not check
            with pytest.raises(RemoteMediaError) as e:
                await victim.size(three)
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
            assert "--max-value-size" in str(e.value), str(e.value)
            assert await neighbour.size(b"x" * 1000) == 1000
    run(main())
    echo_ok(srv.host, srv.port)
    srv.wait_idle(timeout=20)


# --- --max-inflight-calls ----------------------------------------------------------

def test_max_inflight_calls_refuses_a_third_concurrent_call(fresh_server):
    srv = fresh_server(FAST + ["--max-inflight-calls", "2"])
    c = H2Client(srv.host, srv.port, timeout=30)
    try:
        neighbour = open_session(c)
        victim = open_session(c)
        c.send(victim, call_msgs(1, "sleep", (5,)) + call_msgs(2, "sleep", (5,))
               + call_msgs(3, "sleep", (5,)))
        r = c.wait(victim, timeout=10)
        assert r.grpc_status == RESOURCE_EXHAUSTED, r
        assert "--max-inflight-calls" in r.grpc_message and "2" in r.grpc_message
        # Two calls at a time are fine on the neighbour, on the same connection.
        c.send(neighbour, call_msgs(1, "sleep", (0.1,)) + call_msgs(2, "sleep", (0.1,)))
        msgs = wait_msgs(c, neighbour, 3, timeout=20)
        assert sorted(m.result.call_id for m in msgs[1:3]) == [1, 2], msgs
        assert call_result(c, neighbour, 3, "ping", ()) == "pong"
    finally:
        c.close()
    srv.wait_idle(timeout=20)


# --- --handshake-timeout ------------------------------------------------------------

def test_handshake_timeout_closes_silent_and_slowloris_connections(fresh_server):
    srv = fresh_server(["--handshake-timeout", "1s"])
    good = H2Client(srv.host, srv.port)  # handshakes at once: not affected
    silent = socket.create_connection((srv.host, srv.port))
    t_silent = time.monotonic()
    slow = socket.create_connection((srv.host, srv.port))
    t_slow = time.monotonic()
    try:
        # Slowloris: the preface one byte every 0.3 s (it would take 7 s).
        slow_closed_at = None
        for b in PREFACE:
            try:
                slow.sendall(bytes([b]))
            except OSError:
                slow_closed_at = time.monotonic() - t_slow
                break
            if closed_within(slow, 0.3) is not None:
                slow_closed_at = time.monotonic() - t_slow
                break
        assert slow_closed_at is not None, "the slowloris connection was never closed"
        assert 0.7 < slow_closed_at < 3.0, slow_closed_at
        left = closed_within(silent, 3.0)
        assert left is not None, "the silent connection was never closed"
        took = time.monotonic() - t_silent
        assert 0.7 < took < 3.0, took
        time.sleep(max(0.0, 1.5 - (time.monotonic() - t_silent)))
        echo_ok(srv.host, srv.port, c=good)  # past the timeout, still served
    finally:
        for s in (silent, slow):
            s.close()
        good.close()
    assert "no HTTP/2 handshake within 1000 ms" in srv.log_text()


# --- --idle-timeout ---------------------------------------------------------------------

def test_idle_timeout_closes_a_connection_without_streams_only(fresh_server):
    srv = fresh_server(FAST + ["--idle-timeout", "1s"])
    busy = H2Client(srv.host, srv.port, timeout=30)
    idle = None
    try:
        sid = open_session(busy)
        idle = H2Client(srv.host, srv.port)
        t0 = time.monotonic()
        events, closed = pump(idle, 4, until=lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        assert term and term[0].error_code == NO_ERROR, events
        assert time.monotonic() - t0 < 3.0
        assert closed_within(idle.sock, 2.0) is not None, "GOAWAY, but the socket stayed open"
        # The connection with a live session outlived the timeout and works.
        time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
        assert call_result(busy, sid, 1, "ping", ()) == "pong"
        r = busy.responses[sid]
        assert not r.ended, r
    finally:
        if idle is not None:
            idle.close()
        busy.close()
    srv.wait_idle(timeout=20)


def test_idle_timeout_closes_a_connection_whose_streams_wait_without_a_session(fresh_server):
    """A Health stream that never sends its request does not keep the
    connection open: only a session does."""
    srv = fresh_server(["--idle-timeout", "1s"])
    c = H2Client(srv.host, srv.port)
    try:
        sid = c.request("/grpc.health.v1.Health/Check", b"", end=False)
        t0 = time.monotonic()
        events, closed = pump(c, 5, until=lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        assert term and term[0].error_code == NO_ERROR, events
        assert time.monotonic() - t0 < 4.0
        assert c.responses[sid].grpc_status is None  # never answered: no request
        assert closed_within(c.sock, 2.0) is not None, "GOAWAY, but the socket stayed open"
    finally:
        c.close()
    assert "idle with streams but no session; closing" in srv.log_text()


def test_idle_timeout_is_not_reset_by_keepalive_pings(fresh_server):
    """As gRPC's MAX_CONNECTION_IDLE: time without calls. A client that
    only PINGs (a keepalive) is closed as an idle one is."""
    srv = fresh_server(["--idle-timeout", "1s"])
    c = H2Client(srv.host, srv.port)
    try:
        t0 = time.monotonic()
        term: list = []
        for i in range(20):  # 6 s at most
            c.conn.ping(struct.pack(">Q", i))
            c.sock.sendall(c.conn.data_to_send())
            events, closed = pump(c, 0.3)
            term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
            if term or closed:
                break
        assert term and term[0].error_code == NO_ERROR, "PINGs kept the connection open"
        assert time.monotonic() - t0 < 3.0
    finally:
        c.close()


# --- --max-ping-rate ----------------------------------------------------------------------

def test_max_ping_rate_spares_keepalives_and_ends_a_flood(fresh_server):
    srv = fresh_server(["--max-ping-rate", "5"])
    polite = H2Client(srv.host, srv.port)
    flood = H2Client(srv.host, srv.port)
    try:
        # A legitimate keepalive: one PING every 0.5 s for 3 s.
        acks = 0
        for i in range(6):
            polite.conn.ping(struct.pack(">Q", i))
            polite.sock.sendall(polite.conn.data_to_send())
            events, closed = pump(polite, 0.5)
            assert not closed
            assert not [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
            acks += sum(isinstance(ev, h2.events.PingAckReceived) for ev in events)
        events, _ = pump(polite, 0.3)
        acks += sum(isinstance(ev, h2.events.PingAckReceived) for ev in events)
        assert acks == 6
        # A flood: 200 PINGs at once.
        pump(flood, 0.3)
        for i in range(200):
            flood.conn.ping(struct.pack(">Q", i))
        flood.sock.sendall(flood.conn.data_to_send())
        events, closed = pump(flood, 5, until=lambda ev: isinstance(ev, h2.events.ConnectionTerminated))
        term = [ev for ev in events if isinstance(ev, h2.events.ConnectionTerminated)]
        assert term and term[0].error_code == ENHANCE_YOUR_CALM, events
        # gRFC A8: the data that makes a gRPC client halve its keepalive rate.
        assert term[0].additional_data == b"too_many_pings", events
        assert sum(isinstance(ev, h2.events.PingAckReceived) for ev in events) <= 20
        assert closed or closed_within(flood.sock, 3.0) is not None
        echo_ok(srv.host, srv.port, c=polite)  # the polite one is still served
    finally:
        polite.close()
        flood.close()
    echo_ok(srv.host, srv.port)
    assert "PING flood; closing (--max-ping-rate 5)" in srv.log_text()
