"""Regressions for defects a review found in the front: flow-control credit
of ended streams, trees of any shape in a session directory, processes a
session leaves running, and a close that never finishes."""
from __future__ import annotations

import os
import time

from clientlib import runner
from h2raw import (
    ECHO, SESSION, H2Client, call_msgs, grpc_frame, open_msg, read_until,
)
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.remote import RemoteProxyClient
from targets import Sleeper

run = runner(90.0)


def test_reset_streams_give_back_connection_credit(server):
    """Sessions reset while their worker is busy must not eat the window."""
    c = H2Client(server.host, server.port, timeout=30)
    try:
        for _ in range(20):
            sid = c.request(SESSION, grpc_frame(open_msg(Sleeper())), end=False)
            assert read_until(c, sid, 10, timeout=20), "no Ready"
            c.send(sid, call_msgs(1, "sleep", (30,)))
            body = call_msgs(2, "sleep", (b"x" * (4 << 20),))
            stalled = time.monotonic() + 0.5
            while body and time.monotonic() < stalled:
                n = c.send(sid, body)
                body = body[n:]
                if n:
                    stalled = time.monotonic() + 0.5
                read_until(c, sid, 1 << 30, timeout=0.05)  # take WINDOW_UPDATEs
            assert body, "the front kept taking data from a stalled session"
            c.conn.reset_stream(sid)
            c.sock.sendall(c.conn.data_to_send())
        payload = pb.EchoMessage(payload=b"y" * (1 << 20)).SerializeToString()
        sid = c.request(ECHO, grpc_frame(payload))
        r = c.wait(sid, timeout=20)
        assert r.grpc_status == 0, r
        assert len(r.data) == len(payload) + 5
    finally:
        c.close()
    server.wait_idle(timeout=20)


def test_deep_session_directory_neither_crashes_nor_stays(fresh_server):
    srv = fresh_server(["--sandbox", "off"])

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            s = await client.create_proxy(Sleeper())
            assert await s.deep(5000) == 5000
    run(main())
    srv.wait_idle(timeout=30)
    assert srv.proc.poll() is None
    deadline = time.monotonic() + 30
    trash = os.path.join(srv.state_dir, "trash")
    while time.monotonic() < deadline and os.path.exists(trash) and os.listdir(trash):
        time.sleep(0.1)
    assert not os.path.exists(trash) or os.listdir(trash) == []


def test_processes_a_session_started_die_with_it(fresh_server):
    srv = fresh_server(["--sandbox", "off"])

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            s = await client.create_proxy(Sleeper())
            return await s.spawn()
    pid = run(main())
    srv.wait_idle()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        st = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}") else "Z"
        if st == "Z":
            break
        time.sleep(0.05)
    alive = os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    assert not alive


def test_a_close_that_never_finishes_is_bounded(server):
    c = H2Client(server.host, server.port, timeout=30)
    try:
        sid = c.request(SESSION, grpc_frame(open_msg(Sleeper())), end=False)
        assert read_until(c, sid, 10, timeout=20)
        c.send(sid, call_msgs(1, "spin", ()), end=True)  # then half-close
        t = time.monotonic()
        r = c.wait(sid, timeout=20)
        assert r.ended and r.grpc_status is not None
        assert time.monotonic() - t < 15
    finally:
        c.close()
    server.wait_idle()
