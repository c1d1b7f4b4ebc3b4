"""Fixtures for the escape suite: real remotemediad servers (sandbox on, as
root) and sessions on them, driven by the real client from one event loop
that runs in a thread of its own, so that sessions can live across tests
(the neighbour) while each test stays a plain function.

Servers, by what the tests need (each started once per module):
  limited   --session-memory 128M --session-pids 32 --session-disk 16M,
            network isolated: the destructive cases, with a neighbour
            session that must stay unharmed;
  others    started by the tests that need other flags (network off or
            host, --seccomp-log on).
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))
sys.path.insert(0, str(HERE.parents[0] / "integration"))
sys.path.insert(0, str(HERE))

from serverlib import BUILD, Server  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the sandbox needs root")
needs_build = pytest.mark.skipif(not (BUILD / "remotemediad").exists(),
                                 reason="run make first")

LIMITED = ["--session-memory", "128M", "--session-pids", "32",
           "--session-disk", "16M"]


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(needs_root)
        item.add_marker(needs_build)


class Loop:
    """An asyncio loop in a thread; run() submits a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="escape-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 90.0):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Session:
    """A client and one proxy on it, both living in the Loop."""

    def __init__(self, loop: Loop, server: Server, obj, **cfg) -> None:
        from remotemedia.remote import RemoteProxyClient
        self.loop = loop
        self.server = server

        async def open_():
            client = RemoteProxyClient(server.config(**cfg))
            await client.connect()
            try:
                proxy = await client.create_proxy(obj)
            except BaseException:
                await client.disconnect()
                raise
            return client, proxy
        try:
            self.client, self.proxy = loop.run(open_())
        except Exception as e:
            e.add_note("server log:\n" + server.log_text()[-6000:])
            raise
        self.session_id = self.proxy._rm_session.session_id

    def call(self, name: str, *args, timeout: float = 90.0, **kw):
        async def go():
            return await getattr(self.proxy, name)(*args, **kw)
        return self.loop.run(go(), timeout)

    def submit(self, name: str, *args, **kw):
        """Start a call without waiting: a concurrent.futures.Future."""
        async def go():
            return await getattr(self.proxy, name)(*args, **kw)
        return asyncio.run_coroutine_threadsafe(go(), self.loop.loop)

    def error(self, name: str, *args, timeout: float = 90.0, **kw):
        """Call a method that must fail; its RemoteExecutionError."""
        from remotemedia.core.exceptions import RemoteExecutionError
        try:
            value = self.call(name, *args, timeout=timeout, **kw)
        except RemoteExecutionError as e:
            return e
        raise AssertionError(f"{name} returned {value!r}")

    def close(self) -> None:
        async def go():
            await self.client.disconnect()
        try:
            self.loop.run(go(), 30)
        except Exception:
            pass


@pytest.fixture(scope="session")
def loop():
    lp = Loop()
    yield lp
    lp.close()


class Servers:
    """Servers of one module, stopped at its end; asserts that none of them
    crashed (exit status 0 after SIGTERM, no error lines)."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def start(self, extra_args=None, wrapper=None) -> Server:
        if wrapper is None:
            srv = Server(extra_args)
        else:
            srv = _wrapped_server(extra_args, wrapper)
        self.started.append(srv)
        return srv

    def stop_all(self) -> list[str]:
        problems = []
        for srv in self.started:
            alive = srv.proc.poll() is None
            rc = srv.stop()
            log = srv.log_text()
            if not alive or rc != 0:
                problems.append(f"server exited {rc}: {log[-3000:]}")
            srv.cleanup()
        return problems


def _wrapped_server(extra_args, wrapper) -> Server:
    """A Server whose remotemediad runs under wrapper (argv prefix), e.g.
    in a private mount namespace of the test's own."""
    import serverlib

    class Shim:
        """serverlib's view of subprocess while the server starts."""

        def __getattr__(self, name):
            return getattr(subprocess, name)

        @staticmethod
        def Popen(args, **kw):
            return subprocess.Popen(list(wrapper) + list(args), **kw)
    serverlib.subprocess = Shim()
    try:
        return Server(extra_args)
    finally:
        serverlib.subprocess = subprocess


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    problems = s.stop_all()
    assert not problems, problems


@pytest.fixture(scope="module")
def limited(servers):
    """The server of the destructive cases."""
    return servers.start(LIMITED)


def front_errors(srv: Server) -> list[str]:
    """Lines of the server log that say the front itself failed."""
    return [line for line in srv.log_text().splitlines()
            if re.match(r"ts=\S+ level=error proc=front ", line)]


def host_ipv4() -> str | None:
    """A non-loopback IPv4 address of the host, if it has one."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and not m.group(1).startswith("127."):
            return m.group(1)
    return None
