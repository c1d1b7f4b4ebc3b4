"""examples/haproxy: Debian's haproxy, HTTP/2 on both sides, in front of
two remotemediad instances. Sessions spread over both and each works end
to end through the proxy; when one instance drains on SIGTERM, its running
session finishes its call, and new sessions go to the other.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_haproxy_fleet.py
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient
from serverlib import ROOT, wait_for

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
CONFIG = ROOT / "examples" / "haproxy" / "haproxy.cfg"

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


class Where:
    def whoami(self):
        import uuid
        self.me = getattr(self, "me", None) or uuid.uuid4().hex
        return self.me

    def slow(self, seconds):
        import time as t
        t.sleep(seconds)
        return "finished"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fleet(fresh_server, tmp_path):
    """Two instances behind haproxy; yields (proxy port, [servers])."""
    servers = [fresh_server(["--session-pool", "1"]) for _ in range(2)]
    port = free_port()
    env = dict(os.environ, RM_HAPROXY_BIND=f"127.0.0.1:{port}",
               RM_BACKEND_1=f"127.0.0.1:{servers[0].port}",
               RM_BACKEND_2=f"127.0.0.1:{servers[1].port}")
    check = subprocess.run([HAPROXY, "-c", "-f", str(CONFIG)], env=env,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(tmp_path / "haproxy.log", "w+b")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG)], env=env,
                            stdout=log, stderr=log)
    try:
        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(up, 10, "haproxy to listen")
        yield port, servers
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sessions_on(srv) -> int:
    return len(re.findall(r"front_session_new: session", srv.log_text()))


async def open_tracked(client, servers):
    """A new session, and the index of the instance that took it."""
    before = [sessions_on(s) for s in servers]
    proxy = await client.create_proxy(Where())
    grew = [i for i, s in enumerate(servers) if sessions_on(s) > before[i]]
    assert len(grew) == 1, grew
    return proxy, grew[0]


def config(port: int) -> RemoteExecutorConfig:
    return RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=30.0)


def test_sessions_spread_over_the_fleet_and_work_end_to_end(fleet):
    port, servers = fleet

    async def main():
        async with RemoteProxyClient(config(port)) as client:
            proxies = [await client.create_proxy(Where()) for _ in range(6)]
            ids = [await p.whoami() for p in proxies]
            assert len(set(ids)) == 6  # six objects, six sessions
            assert await proxies[0].slow(0) == "finished"
    asyncio.run(asyncio.wait_for(main(), 120))
    counts = [sessions_on(s) for s in servers]
    assert sum(counts) == 6 and min(counts) >= 2, counts


def test_a_draining_instance_finishes_its_sessions_and_new_ones_go_elsewhere(fleet):
    port, servers = fleet

    async def main():
        async with RemoteProxyClient(config(port)) as client:
            opened = [await open_tracked(client, servers) for _ in range(4)]
            on_first = [p for p, i in opened if i == 0]
            assert on_first and len(on_first) < 4, opened
            # A call in flight on the first instance when it drains.
            call = asyncio.ensure_future(on_first[0].slow(2))
            await asyncio.sleep(0.5)
            servers[0].proc.send_signal(signal.SIGTERM)
            assert await call == "finished"
            # New sessions all land on the second instance, and work.
            before = sessions_on(servers[1])
            fresh = [await client.create_proxy(Where()) for _ in range(4)]
            for p in fresh:
                assert await p.slow(0) == "finished"
            return before
    before = asyncio.run(asyncio.wait_for(main(), 120))
    assert sessions_on(servers[1]) - before == 4
    assert servers[0].proc.wait(timeout=30) == 0
    assert "shutting down" in servers[0].log_text()
