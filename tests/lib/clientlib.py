"""The real client, driven from plain test functions.

run(coro) runs a coroutine in a fresh event loop, bounded in time; a module
whose calls take longer takes run = runner(SECONDS). Loop and Session keep
one event loop in a thread of its own, so that sessions can live across
tests (module- or session-scoped fixtures) while each test stays a plain
function.
"""
from __future__ import annotations

import asyncio
import threading


def run(coro, timeout: float = 60.0):
    """Run a coroutine in a fresh event loop, bounded by timeout seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def runner(default_timeout: float):
    """run() with another default bound."""
    def run_(coro, timeout: float = default_timeout):
        return run(coro, timeout)
    return run_


class Loop:
    """An asyncio loop in a thread; run() submits a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="session-loop", daemon=True)
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
    """A client and one proxy on it, both living in the Loop. server is a
    serverlib.Server; cfg goes to its config()."""

    def __init__(self, loop: Loop, server, obj, **cfg) -> None:
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
