"""Object semantics (issue 3) through the real server: generators,
concurrency, exceptions, deadlines, retries, values, pickling, json, output
and the session lifecycle."""
from __future__ import annotations

import abc
import asyncio
import enum
import fractions
import gc
import logging
import os
import socket
import subprocess
import sys
import time

import grpc
import pytest

from clientlib import runner
from remotemedia.core import exceptions as rx
from remotemedia.core.exceptions import RemoteExecutionError
from remotemedia.remote import RemoteProxyClient
from serverlib import ROOT


run = runner(90.0)


class MyError(Exception):
    """A custom exception class defined in the test module."""


class Streams:
    """Markers go to the session's own directory (its cwd): a sandboxed
    session sees no host path, so the test asks the session for them."""

    def __init__(self, marker_dir="."):
        self.marker_dir = marker_dir
        self.advanced = 0

    def has(self, tag):
        return os.path.exists(os.path.join(self.marker_dir, tag))

    def count(self, n):
        for i in range(n):
            self.advanced += 1
            yield i

    async def acount(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            self.advanced += 1
            yield i

    def forever(self, tag):
        try:
            i = 0
            while True:
                self.advanced += 1
                yield i
                i += 1
        finally:
            with open(os.path.join(self.marker_dir, tag), "w") as f:
                f.write("closed")

    async def aforever(self, tag):
        try:
            i = 0
            while True:
                await asyncio.sleep(0)
                yield i
                i += 1
        finally:
            with open(os.path.join(self.marker_dir, tag), "w") as f:
                f.write("closed")

    def broken(self):
        yield 1
        yield 2
        raise KeyError("midway")

    def get_advanced(self):
        return self.advanced


class Conc:
    def __init__(self):
        self.event = None
        self.threads = set()

    async def wait_for_event(self):
        import threading
        self.threads.add(threading.get_ident())
        if self.event is None:
            self.event = asyncio.Event()
        await self.event.wait()
        return "released"

    async def set_event(self):
        import threading
        self.threads.add(threading.get_ident())
        if self.event is None:
            self.event = asyncio.Event()
        self.event.set()
        return "set"

    def square(self, x):
        import threading
        self.threads.add(threading.get_ident())
        return x * x

    def thread_count(self):
        import threading
        self.threads.add(threading.get_ident())
        return len(self.threads)


class Errors:
    def value_error(self):
        raise ValueError("nope")

    def key_error(self):
        raise KeyError("k")

    def custom(self):
        raise MyError("custom!")

    def unknown_module(self):
        import types
        mod = types.ModuleType("rm_never_on_client")
        exec("class Hidden(Exception): pass", mod.__dict__)
        sys.modules["rm_never_on_client"] = mod
        raise mod.Hidden("hidden")


class Slow:
    def __init__(self):
        self.calls = 0

    def sleep(self, s):
        self.calls += 1
        time.sleep(s)
        return "done"

    def busy(self, s):
        end = time.monotonic() + s
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    def busy_forever_ignoring_timeouts(self):
        while True:
            try:
                while True:
                    pass
            except TimeoutError:
                pass

    async def async_sleep(self, s):
        await asyncio.sleep(s)
        return "done"

    def count(self):
        return self.calls

    def hold(self, s):
        """Hold the session s seconds, past its own deadline (within the
        grace)."""
        end = time.monotonic() + s
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except TimeoutError:
                pass
        return s

    def bump(self):
        self.calls += 1
        return self.calls


class Values:
    def echo(self, x):
        return x

    def size(self, b):
        return len(b)

    def make(self, n):
        return os.urandom(16) * (n // 16)

    def a_set(self):
        return {1, 2}

    def circular(self):
        a = [1]
        a.append(a)
        return a


class Talker:
    def talk(self, n):
        import logging as lg
        for i in range(n):
            print(f"line {i}")
        lg.getLogger("talker").info("logged info")
        lg.getLogger("talker").warning("logged warning")
        return n

    def c_stderr(self):
        """What C code writes to the C stderr: fputs, perror."""
        import ctypes
        libc = ctypes.CDLL(None)
        err = ctypes.c_void_p.in_dll(libc, "stderr")
        libc.fputs(b"C stderr via fputs\n", err)
        libc.fflush(err)
        libc.perror(b"C perror")
        return "done"

    def flood(self, mib):
        import sys as s
        chunk = "x" * 1023 + "\n"
        for _ in range(mib * 1024):
            s.stdout.write(chunk)
        return mib

    def dribble(self, n, times, pause):
        """Write n bytes at once, times times, pause seconds apart."""
        import os as o
        import time as tm
        for _ in range(times):
            o.write(1, b"d" * n)
            tm.sleep(pause)
        return n * times

    def flood_in_background(self, seconds):
        """Write to stdout from a thread as fast as it goes, for a while."""
        import os as o
        import threading as th
        import time as tm

        def run():
            block = b"f" * 65535 + b"\n"
            end = tm.monotonic() + seconds
            while tm.monotonic() < end:
                o.write(1, block)
        th.Thread(target=run, daemon=True).start()
        return "started"

    def close_stdio(self):
        import os as o
        o.close(1)
        o.close(2)
        return "closed"

    def ping(self):
        return "pong"

    def block_the_read_ends(self):
        """Make the read ends this process holds of its output pipes
        blocking; how many there were."""
        import os as o
        pipes = {o.readlink("/proc/self/fd/1"), o.readlink("/proc/self/fd/2")}
        n = 0
        for fd in o.listdir("/proc/self/fd"):
            try:
                if o.readlink(f"/proc/self/fd/{fd}") not in pipes:
                    continue
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except OSError:
                continue
            if flags & 3 == o.O_RDONLY:
                o.set_blocking(int(fd), True)
                n += 1
        return n

    def written_when_killed(self, lines, after):
        """Write numbered lines from a thread, and SIGKILL the worker
        after `after` seconds, while the front reads them."""
        import os as o
        import signal as sg
        import threading as th
        import time as tm

        def write():
            for i in range(lines):
                o.write(1, b"%d\n" % i)
        th.Thread(target=write, daemon=True).start()
        tm.sleep(after)
        o.kill(o.getpid(), sg.SIGKILL)

    def last_words(self, tag, how):
        """Write to both streams, then die at once, before or while the
        front reads them."""
        import ctypes
        import os as o
        import sys as s
        print(f"stdout {tag}", flush=True)
        s.stderr.write(f"stderr {tag}\n")
        s.stderr.flush()
        if how == "exit":
            o._exit(3)
        if how == "abort":
            o.abort()
        ctypes.string_at(0)  # SIGSEGV

    def open_fds(self):
        """The worker's descriptors, and those a child of it starts with."""
        import os as o
        import subprocess as sp
        import sys as s
        child = sp.run([s.executable, "-c", "import os; print(os.listdir('/proc/self/fd'))"],
                       capture_output=True, text=True, check=True).stdout
        links = {}
        for fd in o.listdir("/proc/self/fd"):
            try:
                links[int(fd)] = o.readlink(f"/proc/self/fd/{fd}")
                if links[int(fd)].startswith("pipe:"):  # and which end
                    with open(f"/proc/self/fdinfo/{fd}") as f:
                        flags = int(f.read().split("flags:")[1].split()[0], 8)
                    links[int(fd)] += " write" if flags & 3 == o.O_WRONLY else " read"
            except OSError:
                pass  # the directory's own
        return links, child


# --- generators -----------------------------------------------------------------

def test_generators_both_syntaxes(server, tmp_path):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            s = await client.create_proxy(Streams())
            assert [x async for x in s.count(5)] == [0, 1, 2, 3, 4]
            assert [x async for x in await s.count(3)] == [0, 1, 2]
            assert [x async for x in s.acount(4)] == [0, 1, 2, 3]
            assert [x async for x in await s.acount(2)] == [0, 1]
    run(main())


def test_items_flow_on_demand(server, tmp_path):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            s = await client.create_proxy(Streams())
            got = []
            async for x in s.forever("demand"):
                got.append(x)
                if len(got) == 3:
                    break
            # an infinite generator advanced only by the small prefetch window
            adv = await s.get_advanced()
            assert 3 <= adv <= 3 + 16
    run(main())


def test_early_break_runs_finally(server, tmp_path):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            s = await client.create_proxy(Streams())
            async for x in s.forever("brk"):
                if x == 2:
                    break
            async for x in s.aforever("abrk"):
                if x == 2:
                    break
            await s.get_advanced()  # ordering: the Cancels went before this call
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (
                    await s.has("brk") and await s.has("abrk")):
                await asyncio.sleep(0.02)
            assert await s.has("brk")
            assert await s.has("abrk")
    run(main())


def test_closed_and_collected_iterators_cancel(server, tmp_path):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            s = await client.create_proxy(Streams())
            it = (await s.forever("closed")).__aiter__()
            assert await it.__anext__() == 0
            await it.aclose()
            it2 = (await s.forever("collected")).__aiter__()
            assert await it2.__anext__() == 0
            del it2
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (
                    await s.has("closed") and await s.has("collected")):
                await asyncio.sleep(0.02)
            assert await s.has("closed")
            assert await s.has("collected")
    run(main())


def test_error_midway_through_a_generator(server, tmp_path):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            s = await client.create_proxy(Streams())
            got = []
            with pytest.raises(KeyError) as e:
                async for x in s.broken():
                    got.append(x)
            assert got == [1, 2]
            assert isinstance(e.value, RemoteExecutionError)
            assert "midway" in str(e.value)
    run(main())


# --- concurrency ----------------------------------------------------------------

def test_gather_many_calls(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            c = await client.create_proxy(Conc())
            results = await asyncio.gather(*(c.square(i) for i in range(200)))
            assert results == [i * i for i in range(200)]
            assert await c.thread_count() == 1  # all user code on the loop thread
    run(main())


def test_async_methods_interleave(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            c = await client.create_proxy(Conc())
            waiter = asyncio.ensure_future(c.wait_for_event())
            await asyncio.sleep(0)  # the waiter's Call goes first
            setter = c.set_event()
            assert await asyncio.gather(waiter, setter) == ["released", "set"]
            assert await c.thread_count() == 1
    run(main())


# --- exceptions -------------------------------------------------------------------

def test_exception_types(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            e = await client.create_proxy(Errors())
            with pytest.raises(ValueError):
                await e.value_error()
            with pytest.raises(KeyError):
                await e.key_error()
            with pytest.raises(MyError) as exc:
                await e.custom()
            assert isinstance(exc.value, RemoteExecutionError)
            assert "custom!" in str(exc.value)
            before = set(sys.modules)
            with pytest.raises(RemoteExecutionError) as exc:
                await e.unknown_module()
            assert exc.value.remote_type == "rm_never_on_client.Hidden"
            assert "rm_never_on_client" not in sys.modules
            assert set(sys.modules) - before <= {"rm_never_on_client"} - {"rm_never_on_client"}
            with pytest.raises(AttributeError):
                await e.no_such_method()
            with pytest.raises(AttributeError):
                await e.no_such_attribute
    run(main())


# --- deadlines ----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sleep", "busy", "async_sleep"])
def test_deadline_raises_timeout_error_in_the_call(server, method):
    async def main():
        async with RemoteProxyClient(server.config(timeout=1.0)) as client:
            s = await client.create_proxy(Slow())
            t = time.monotonic()
            with pytest.raises(TimeoutError) as e:
                await getattr(s, method)(30)
            assert isinstance(e.value, rx.RemoteTimeoutError)
            assert time.monotonic() - t < 10
            # the session survives: the worker stopped the call itself
            assert await s.count() in (0, 1)
    run(main())


def test_a_call_that_timed_out_waiting_never_runs(server):
    """A call queued behind a sync method that holds the session past the
    call's deadline: the client is told it timed out, and it must not run
    after that (its side effect would be a surprise). Whichever comes
    first ends it: the front's word that its deadline passed, or the
    client's Cancel on its own timeout."""
    async def main():
        async with RemoteProxyClient(server.config(timeout=1.0)) as client:
            s = await client.create_proxy(Slow())
            held = asyncio.ensure_future(s.hold(1.8))
            await asyncio.sleep(0.2)
            with pytest.raises(rx.RemoteTimeoutError):
                await s.bump()
            with pytest.raises(TimeoutError):
                await held  # past its own deadline, within the grace
            await asyncio.sleep(0.5)
            assert await s.count() == 0
            assert await s.bump() == 1  # the session goes on
    run(main())


def test_call_ignoring_its_deadline_kills_the_worker(server):
    async def main():
        async with RemoteProxyClient(server.config(timeout=1.0)) as client:
            s = await client.create_proxy(Slow())
            with pytest.raises(TimeoutError):
                await s.busy_forever_ignoring_timeouts()
            # the front kills the worker after the grace period
            with pytest.raises(RemoteExecutionError) as e:
                for _ in range(100):
                    await s.count()
                    await asyncio.sleep(0.1)
            assert e.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED,)
    run(main())
    server.wait_idle()


def test_a_client_whose_loop_closed_starts_afresh_on_the_next(server):
    """Connected in one asyncio.run, never disconnected: in the next, the
    client connects again instead of refusing (its loop is gone, not busy
    elsewhere), and the session of the closed loop does not stay."""
    client = RemoteProxyClient(server.config())

    async def first():
        p = await client.create_proxy(Slow())
        return await p.count()

    async def second():
        p = await client.create_proxy(Slow())
        n = await p.count()
        await client.disconnect()
        return n
    assert run(first()) == 0
    assert run(second()) == 0
    gc.collect()
    server.wait_idle(timeout=20)


# --- retries ------------------------------------------------------------------------

def test_retry_reaches_a_server_that_starts_late(fresh_server):
    import threading
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    holder = {}

    def start_later():
        time.sleep(0.5)
        holder["srv"] = fresh_server(["--listen", f"127.0.0.1:{port}"])

    async def main():
        from remotemedia.core.node import RemoteExecutorConfig
        th = threading.Thread(target=start_later)
        th.start()
        cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=20.0, max_retries=8)
        try:
            async with RemoteProxyClient(cfg) as client:
                v = await client.create_proxy(Values())
                assert await v.echo(1) == 1
        finally:
            th.join()
    run(main())


def test_a_call_is_never_resent(fresh_server):
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config(timeout=5.0, max_retries=5)) as client:
            s = await client.create_proxy(Slow())
            assert await s.sleep(0) == "done"
            task = asyncio.ensure_future(s.sleep(3))
            await asyncio.sleep(0.5)
            pid = srv.worker_pids()[0]
            os.kill(pid, 9)
            with pytest.raises(RemoteExecutionError):
                await task
            with pytest.raises(RemoteExecutionError):
                await s.count()  # no silent new session
            s2 = await client.create_proxy(Slow())
            assert await s2.count() == 0
    run(main())


def test_executions_are_counted_once_per_call(server):
    async def main():
        async with RemoteProxyClient(server.config(max_retries=5)) as client:
            s = await client.create_proxy(Slow())
            for _ in range(20):
                await s.sleep(0)
            assert await s.count() == 20
    run(main())


# --- values -------------------------------------------------------------------------

def test_values_round_trip(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            v = await client.create_proxy(Values())
            for x in [None, b"\x00\xff", {"a": [1, (2, 3)], "b": {"c": None}},
                      (1, 2), {1, 2, 3}, frozenset({4}), 1.5, "ü"]:
                got = await v.echo(x)
                assert got == x and type(got) is type(x)
            assert await v.echo(((1,), [2])) == ((1,), [2])
            c = await v.circular()
            assert c[0] == 1 and c[1] is c
    run(main())


@pytest.mark.skipif(os.environ.get("RM_SANITIZED") == "1",
                    reason="ASan's shadow memory and quarantine make the "
                           "front's RSS meaningless")
def test_64_mib_both_ways_with_bounded_front_memory(server):
    def front_rss_kib():
        with open(f"/proc/{server.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    async def main():
        async with RemoteProxyClient(server.config(timeout=60)) as client:
            v = await client.create_proxy(Values())
            base = front_rss_kib()
            payload = os.urandom(64 << 20)
            assert await v.size(payload) == 64 << 20
            peak = front_rss_kib()
            got = await v.make(64 << 20)
            assert len(got) == 64 << 20
            got2 = await v.echo(payload)
            assert got2 == payload
            peak = max(peak, front_rss_kib())
            with open(f"/proc/{server.proc.pid}/status") as f:
                hwm = [int(x.split()[1]) for x in f if x.startswith("VmHWM:")][0]
            # the front relays chunk by chunk: far below one 64 MiB value
            assert hwm - base < 32 * 1024, (base, peak, hwm)
    run(main(), timeout=300)


# --- pickling the object ---------------------------------------------------------

def test_classes_from_user_modules_travel_by_value(server, tmp_path):
    mod = tmp_path / "rm_user_mod_xyz.py"
    mod.write_text("class Helper:\n    def hi(self):\n        return 'hi from user module'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import rm_user_mod_xyz

        async def main():
            async with RemoteProxyClient(server.config()) as client:
                h = await client.create_proxy(rm_user_mod_xyz.Helper())
                assert await h.hi() == "hi from user module"
        run(main())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("rm_user_mod_xyz", None)


def test_every_user_module_travels_by_value(server, tmp_path):
    """Not only the object's class's module: a module that its methods call,
    a package's module importing its sibling, and an argument's class from
    a module imported after the session opened."""
    (tmp_path / "rm_helpers_q.py").write_text(
        "def triple(x):\n    return 3 * x\n")
    pkg = tmp_path / "rm_pkg_q"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "util.py").write_text("def halve(x):\n    return x / 2\n")
    (pkg / "core.py").write_text(
        "from rm_pkg_q.util import halve\n\n"
        "class Processor:\n    def run(self, xs):\n        return [halve(x) for x in xs]\n")
    (tmp_path / "rm_box_q.py").write_text(
        "class Box:\n    def __init__(self, v):\n        self.v = v\n")
    sys.path.insert(0, str(tmp_path))
    names = ("rm_helpers_q", "rm_pkg_q", "rm_pkg_q.util", "rm_pkg_q.core", "rm_box_q")
    try:
        import rm_helpers_q
        from rm_pkg_q.core import Processor

        class UsesHelper:
            def trip(self, x):
                return rm_helpers_q.triple(x)

            def unbox(self, box):
                return box.v

        async def main():
            async with RemoteProxyClient(server.config()) as client:
                p = await client.create_proxy(UsesHelper())
                assert await p.trip(2) == 6
                q = await client.create_proxy(Processor())
                assert await q.run([1, 4]) == [0.5, 2.0]
                import rm_box_q  # after the sessions opened
                assert await p.unbox(rm_box_q.Box(9)) == 9
        run(main())
    finally:
        sys.path.remove(str(tmp_path))
        for name in names:
            sys.modules.pop(name, None)


class MakesServerOnly:
    """Returns objects of a class that exists only in the session, and one
    whose loading fails."""

    def _make(self):
        import sys
        import types
        mod = types.ModuleType("rm_server_only_q")
        exec("class Thing:\n    pass\n", mod.__dict__)
        sys.modules["rm_server_only_q"] = mod
        return mod.Thing()

    def make(self):
        return self._make()

    def gen(self):
        yield 1
        yield self._make()

    def bad_reduce(self):
        return FailsToLoad()


def _fail_to_load():
    raise ValueError("cannot load me")


class FailsToLoad:
    def __reduce__(self):
        return (_fail_to_load, ())


def test_a_result_the_client_cannot_decode_says_so(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            p = await client.create_proxy(MakesServerOnly())
            with pytest.raises(RemoteExecutionError,
                               match=r"the result of make\(\) cannot be decoded on the "
                                     r"client: ModuleNotFoundError") as e:
                await p.make()
            assert isinstance(e.value.__cause__, ModuleNotFoundError)
            assert "on the server only" in str(e.value)
            g = await p.gen()
            assert await g.__anext__() == 1
            with pytest.raises(RemoteExecutionError, match=r"an item of gen\(\) cannot be"):
                await g.__anext__()
            with pytest.raises(RemoteExecutionError, match="ValueError: cannot load me"):
                await p.bad_reduce()
            g = await p.gen()  # the session goes on
            assert await g.__anext__() == 1
            await g.aclose()
    run(main())


class Sleepy:
    def sleep(self, s):
        time.sleep(s)
        return s

    def hi(self):
        return "hi"


def test_a_session_opened_while_the_client_disconnects_is_closed(server):
    """disconnect() closes the sessions it found, and those opened while it
    waited for them: none outlives it."""
    async def main():
        client = RemoteProxyClient(server.config(timeout=30))
        await client.connect()
        busy = await client.create_proxy(Sleepy())
        running = asyncio.ensure_future(busy.sleep(1.0))  # the close waits for it
        await asyncio.sleep(0.2)
        leaving = asyncio.ensure_future(client.disconnect())
        await asyncio.sleep(0)
        try:
            late = await client.create_proxy(Sleepy())
        except (rx.SessionClosedError, rx.ConnectionLostError):
            late = None  # refused at Ready, or its stream went with the channel
        await leaving
        assert await running == 1.0
        assert not client._sessions
        if late is not None:
            with pytest.raises(rx.SessionClosedError):
                await late.hi()
    run(main())
    server.wait_idle()


class Registry:
    @staticmethod
    def record(**kwargs):
        return sorted(kwargs)

    def __getattr__(self, name):
        if name == "dynamic":
            return lambda **kw: sorted(kw)
        raise AttributeError(name)


class LongChain:
    def fail(self, n):
        err = None
        for i in range(n):
            try:
                raise ValueError(i) from err
            except ValueError as e:
                err = e
        raise err


def test_a_long_exception_chain_keeps_its_traceback(server):
    """Deeper than the recursion limit: the traceback was cut to one line."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            p = await client.create_proxy(LongChain())
            with pytest.raises(ValueError) as e:
                await p.fail(1500)
            tb = e.value.remote_traceback
            assert "direct cause of the following exception" in tb, tb[-500:]
            assert tb.count("\n") > 1000
    run(main())


class Doubler:
    def __call__(self, x, *, times=2):
        return x * times


def _triple(x):
    return 3 * x


def test_calling_the_proxy_calls_the_object(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            d = await client.create_proxy(Doubler())
            assert await d(21) == 42 and await d(2, times=5) == 10
            f = await client.create_proxy(_triple)
            assert await f(3) == 9
            r = await client.create_proxy(Registry())
            with pytest.raises(AttributeError):
                await r(1)
    run(main())


class BadState:
    def __init__(self):
        self.state = 1

    def __setstate__(self, state):
        raise ValueError("bad state: plugin install missing, error")


def test_an_object_that_cannot_be_loaded_says_why_with_its_traceback(server):
    """The load's exception comes with its type and traceback; and a message
    that speaks of installing is no InstallError for that."""
    async def main():
        async with RemoteProxyClient(server.config(max_retries=0)) as client:
            with pytest.raises(RemoteExecutionError) as e:
                await client.create_proxy(BadState())
            assert type(e.value) is RemoteExecutionError
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "cannot load the object: ValueError: bad state" in str(e.value)
            assert e.value.remote_type == "ValueError"
            assert "__setstate__" in e.value.remote_traceback
    run(main())
    server.wait_idle()


def test_a_keyword_argument_named_self_is_passed_on(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            r = await client.create_proxy(Registry())
            assert await r.record(self=1, other=2) == ["other", "self"]
            assert await r.dynamic(self=1) == ["self"]
    run(main())


class Counter:
    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += 1
        return x


def test_an_unawaited_call_as_an_argument_says_await_it(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            c = await client.create_proxy(Counter())
            pending = c.add(1)
            with pytest.raises(TypeError, match=r"remote call add\(\) cannot be pickled: await it"):
                c.add(pending)
            await pending
            with pytest.raises(TypeError, match="remote attribute total cannot be pickled"):
                c.add(c.total)
            with pytest.raises(TypeError, match="remote method add cannot be pickled"):
                c.add(c.add)
    run(main())


class ApiError(Exception):
    """Its __init__ takes other arguments than it passes on, and it has a
    code of its own."""

    def __init__(self, status, body):
        super().__init__(f"{status} {body['detail']}")
        self.code = status
        self.body = body


class NotFound(Exception):
    """A werkzeug-style exception: its code is the class's."""
    code = 404


class RaisesApiError:
    def fail(self):
        raise ApiError(404, {"detail": "not found"})

    def not_found(self):
        raise NotFound("no such page")


def test_an_exception_keeps_its_attributes_and_its_own_code(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            p = await client.create_proxy(RaisesApiError())
            with pytest.raises(ApiError) as e:
                await p.fail()
            assert isinstance(e.value, RemoteExecutionError)
            assert e.value.code == 404 and e.value.body == {"detail": "not found"}
            assert str(e.value) == "404 not found"
            with pytest.raises(NotFound) as e:
                await p.not_found()
            assert e.value.code == 404 and str(e.value) == "no such page"
    run(main())


class Point:
    def __init__(self, x):
        self.x = x


class Shape(abc.ABC):
    """An abstract class with a registered virtual subclass."""


Shape.register(complex)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class ByValue:
    """Classes and functions of the client's, sent by value, that the worker
    rebuilds without cloudpickle until something needs cloudpickle."""

    def __init__(self, k):
        self.k = k
        self.scale = lambda y: y * k

    def loaded(self, name):
        return name in sys.modules

    def make(self, x):
        return Point(x)

    def same_class(self, a, b):
        return type(a) is type(b) is Point

    def x_of(self, p):
        return p.x

    def scaled(self, y):
        return self.scale(y)

    def adder(self, n):
        def add(y):
            return y + n + self.k
        return add

    def is_shape(self, v):
        return isinstance(v, Shape)

    def plain_values(self):
        return [1, "a", (2.5, None), {"k": {3, 4}}, bytearray(b"xy"), frozenset()]

    def importable(self, n):
        """Values of importable classes and functions: pickle alone."""
        import fractions
        import functools
        import operator
        import numpy
        return (numpy.arange(n), functools.partial(operator.add, n),
                fractions.Fraction(1, n), ValueError("v"), type(None))

    def bound(self):
        """A function of the client's bound to a value of an importable
        class: pickle would write getattr(value, "<lambda>")."""
        import fractions
        import types as t
        return t.MethodType(lambda obj: obj * 2, fractions.Fraction(1, 2))

    def fail(self):
        raise ValueError("by value")


class Passing:
    """A class sent by value only in one call's argument."""

    def __init__(self, x):
        self.x = x


class Tracker:
    """What the runtime tracks of the classes it rebuilt (by the ids that
    the client's cloudpickle gave them), before cloudpickle is imported."""

    def x_of(self, p):
        return p.x

    def same(self, a, b):
        return type(a) is type(b)

    def tracked(self):
        import gc
        import sys as s
        gc.collect()  # a class is in a cycle with its own __mro__
        rt = s.modules["_remotemedia_runtime"]
        refs = list(rt._cp_classes.values())
        return (sorted(r().__name__ for r in refs if r() is not None),
                sum(r() is None for r in refs), "cloudpickle" in s.modules)


class Colors:
    """Its pickle rebuilds an enum, which loading without cloudpickle
    leaves to cloudpickle, halfway through the pickle."""

    def color(self, name):
        return Color[name]

    def x_of(self, p):
        return p.x


def test_objects_sent_by_value_load_without_cloudpickle(server):
    """The worker loads a class sent by value, and pickles results of
    builtin types, without importing cloudpickle (nor logging, json, re,
    weakref, selectors: an idle session's memory); a result that needs
    cloudpickle imports it, and classes rebuilt before then keep the
    client's identity both ways."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            b = await client.create_proxy(ByValue(3))
            for name in ("cloudpickle", "logging", "json", "re", "traceback",
                         "linecache", "typing", "inspect", "weakref",
                         "selectors"):
                assert await b.loaded(name) is False, name
            assert await b.scaled(2) == 6
            assert await b.same_class(Point(1), Point(2)) is True
            assert await b.x_of(Point(7)) == 7
            assert await b.is_shape(1j) is True
            assert await b.is_shape(1) is False
            got = await b.plain_values()
            assert got == [1, "a", (2.5, None), {"k": {3, 4}}, bytearray(b"xy"), frozenset()]
            assert type(got[4]) is bytearray
            arr, add, frac, err, none = await b.importable(4)
            assert arr.tolist() == [0, 1, 2, 3] and add(1) == 5
            assert frac == fractions.Fraction(1, 4) and type(err) is ValueError
            assert none is type(None)
            with pytest.raises(ValueError, match="by value"):
                await b.fail()
            assert await b.loaded("cloudpickle") is False

            # A client's class in a result: cloudpickle now, by the client's id.
            p = await b.make(5)
            assert type(p) is Point and p.x == 5
            assert await b.loaded("cloudpickle") is True
            assert await b.same_class(Point(1), p) is True
            add = await b.adder(10)
            assert add(1) == 14

            c = await client.create_proxy(Colors())
            assert await c.color("RED") is Color.RED
            assert await c.x_of(Point(8)) == 8

            d = await client.create_proxy(ByValue(1))
            assert (await d.bound())() == 1
    run(main())


def test_rebuilt_classes_are_tracked_weakly(server):
    """A class rebuilt from a call's argument is the same class for the
    rest of that call, and is not kept once nothing uses it: the runtime
    holds it weakly, as cloudpickle's own tracker does, and drops the
    entry with it."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Tracker())
            assert await t.same(Passing(1), Passing(2)) is True
            assert await t.x_of(Passing(7)) == 7
            names, dead, cp = await t.tracked()
            assert not cp
            assert "Passing" not in names and dead == 0
            b = await client.create_proxy(ByValue(2))
            assert await b.same_class(Point(1), Point(2)) is True
    run(main())


class LateLogging:
    def handlers(self):
        """Import logging behind a finder that looks it up again from
        inside its own lookup (as wrapt's import hooks do), after a mere
        look-up of it: the runtime's set-up of the root logger still runs."""
        import importlib.util
        import sys as s

        class Nested:
            busy = False

            def find_spec(self, name, path=None, target=None):
                if name == "logging" and not self.busy:
                    self.busy = True
                    try:
                        importlib.util.find_spec(name)
                    finally:
                        self.busy = False
                return None

        assert "logging" not in s.modules
        importlib.util.find_spec("logging")
        s.meta_path.insert(0, Nested())
        import logging
        return [type(h).__name__ for h in logging.getLogger().handlers]


def test_logging_is_set_up_whoever_imports_it(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            p = await client.create_proxy(LateLogging())
            assert await p.handlers() == ["StreamHandler"]
    run(main())


class Site:
    """What site gave the session; and the runtime's set-up of site run on
    directories of the session's own (in its cwd: a sandboxed session sees
    no host path)."""

    def state(self):
        import builtins
        import sys as s
        return (sorted(s.modules), list(s.path), s.flags.no_site,
                [n for n in ("exit", "quit", "help", "copyright", "credits", "license")
                 if hasattr(builtins, n)])

    def set_up(self):
        import sys as s
        rt = s.modules["_remotemedia_runtime"]
        host, env = os.path.abspath("host-site"), os.path.abspath("env-site")
        for d in ("host-site/extra", "host-site/extra2", "env-site/env-extra"):
            os.makedirs(d, exist_ok=True)
        files = {"host-site/a.pth": b"# a comment\n\nextra\nmissing\n"
                                    b"import os; os.environ['RMTEST_HOST_PTH'] = '1'\n",
                 "host-site/b.pth": b"extra2\n\xff\n",  # not text: left out
                 # An import line that moves sys.path around.
                 "env-site/b.pth": b"import sys; sys.path.insert(0, 'rmtest-front')\n",
                 "env-site/c.pth": b"env-extra\nimport os; os.environ['RMTEST_ENV_PTH'] = '1'\n",
                 # Reported, and the worker and the other files go on.
                 "env-site/d.pth": b"import sys; sys.exit(3)\n",
                 "env-site/e.pth": b"import rmtest_no_such_module\n",
                 "env-site/f.pth": b"\xff\n"}
        for name, data in files.items():
            with open(name, "wb") as f:
                f.write(data)
        s.path.insert(0, env)
        before = list(s.path)
        rt._setup_site([host, os.path.abspath("nowhere"), env])
        rt._run_env_pth([env])
        return ([os.path.relpath(p) for p in s.path if p not in before],
                os.environ.get("RMTEST_HOST_PTH"), os.environ.get("RMTEST_ENV_PTH"))


def _host_modules(*flags):
    out = subprocess.run(["/usr/bin/python3", *flags, "-c", "import sys; print(*sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_site_gives_the_host_packages_without_the_hosts_hooks(server, caplog):
    """A session sees the host's site-packages as /usr/bin/python3 does, with
    site's builtins, but the host's .pth import lines and sitecustomize do
    not run in it (they cost every session memory); the directories that
    .pth files name still join sys.path, after the session's own."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            p = await client.create_proxy(Site())
            mods, path, no_site, names = await p.state()
            added, host_ran, env_ran = await p.set_up()
            return mods, path, no_site, names, added, host_ran, env_ran

    with caplog.at_level(logging.INFO):
        mods, path, no_site, names, added, host_ran, env_ran = run(main())
    import site
    host = [d for d in site.getsitepackages() if os.path.isdir(d)]
    assert [p for p in path if p in host] == host
    assert no_site == 1
    assert names == ["exit", "quit", "help", "copyright", "credits", "license"]
    # What the host's hooks import here, and nothing that imports them.
    hooks = _host_modules("-I") - _host_modules("-I", "-S")
    for name in ("sitecustomize", "_distutils_hack", "certifi", "mpl_toolkits",
                 "importlib.util"):
        if name in hooks:
            assert name not in mods, name
    # The environment's directories come before every host one.
    assert added == ["rmtest-front", "env-site/env-extra", "host-site", "host-site/extra"]
    assert host_ran is None and env_ran == "1"
    assert "host-site/b.pth: UnicodeDecodeError" in server.log_text()
    for name, why in (("d", "SystemExit: 3"), ("e", "rmtest_no_such_module"),
                      ("f", "UnicodeDecodeError")):
        assert f"env-site/{name}.pth" in caplog.text and why in caplog.text, name


def test_version_mismatch_is_failed_precondition(server, monkeypatch):
    import remotemedia.remote as rr
    import cloudpickle

    async def main(field, value):
        async with RemoteProxyClient(server.config()) as client:
            with pytest.raises(RemoteExecutionError) as e:
                await client.create_proxy(Values())
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            return str(e.value)

    import remotemedia.remote.wire as wire
    monkeypatch.setattr(wire, "python_version", lambda: "3.99")
    msg = run(main("py", "3.99"))
    assert "3.99" in msg
    monkeypatch.undo()
    monkeypatch.setattr(cloudpickle, "__version__", "99.0.0")
    msg = run(main("cp", "99.0.0"))
    assert "cloudpickle" in msg
    server.wait_idle()


# --- json -------------------------------------------------------------------------

def test_json_format(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            v = await client.create_proxy(Values(), serialization_format="json")
            assert await v.echo({"a": [1, 2.5, "x", None, True]}) == {"a": [1, 2.5, "x", None, True]}
            assert await v.echo((1, 2)) == [1, 2]  # JSON has no tuples
            with pytest.raises(TypeError) as e:
                await v.echo({1, 2})
            assert "set" in str(e.value)
            with pytest.raises(RemoteExecutionError) as e:
                await v.a_set()
            assert "set" in str(e.value)
    run(main())


# --- output -----------------------------------------------------------------------

def test_a_killed_worker_loses_none_of_its_output(server):
    """A worker killed while it writes: what it wrote arrives whole, in
    order, without a gap. (When the worker read its own pipes, what it had
    read and not yet sent died with it: a gap before the last lines.)"""
    from h2raw import H2Client, call_msgs, open_session, server_msgs
    mid = 0  # sessions killed in the middle of their writing
    for _ in range(20):
        c = H2Client(server.host, server.port, timeout=60)
        try:
            sid = open_session(c, Talker())
            c.send(sid, call_msgs(1, "written_when_killed", (20000, 0.02)))
            r = c.wait(sid, 60)
            assert r.ended, r
        finally:
            c.close()
        outs = [m.output for m in server_msgs(r.data) if m.WhichOneof("msg") == "output"]
        assert sum(o.dropped_bytes for o in outs) == 0
        data = b"".join(o.data for o in outs if o.stream == 0)
        lines = data.split(b"\n")
        assert lines[-1] == b"", data[-100:]  # each line is one write
        lines = lines[:-1]
        assert lines == [b"%d" % i for i in range(len(lines))], (
            len(lines), [x for i, x in enumerate(lines) if x != b"%d" % i][:3])
        mid += 0 < len(lines) < 20000
    assert mid >= 5, mid


def test_a_session_flooding_its_output_holds_up_no_one(server, caplog):
    """A session that writes as fast as it can: the front drops what is
    over the cap without waiting for it (the session's own calls go on,
    print included) and without holding up another session."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            a = await client.create_proxy(Talker())
            b = await client.create_proxy(Values())
            assert await a.flood_in_background(3) == "started"
            for i in range(50):
                assert await b.echo(i) == i
                assert await a.talk(1) == 1
    with caplog.at_level(logging.INFO, logger="remotemedia"):
        run(main())
    assert "bytes of output dropped" in caplog.text
    server.wait_idle()


def test_user_code_cannot_make_the_fronts_read_ends_blocking(server):
    """The worker's read ends of its output pipes are other open files than
    the front's: user code that makes them blocking leaves the front's
    nonblocking. (Were they the front's, its next read of an empty pipe
    would stop the whole front.)"""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            v = await client.create_proxy(Values())
            assert await t.block_the_read_ends() == 2
            for i in range(20):
                assert await asyncio.wait_for(t.talk(5), 30) == 5
                assert await asyncio.wait_for(v.echo(i), 30) == i
    run(main())
    server.wait_idle()


def test_a_session_that_closes_its_stdout_and_stderr_goes_on(server):
    """User code closes fds 1 and 2: its answers still come (the worker
    polls its own read ends before each answer)."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            assert await t.close_stdio() == "closed"
            for _ in range(3):
                assert await t.ping() == "pong"
    run(main())
    server.wait_idle()


def test_c_stderr_arrives_as_output_not_in_the_server_log(server, caplog):
    """C extensions' stderr (fputs(stderr), perror, assert, Py_FatalError)
    is the session's output, as fd 2 is: it went to the server's log."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            assert await t.c_stderr() == "done"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "C perror" not in caplog.text:
                await asyncio.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="remotemedia"):
        run(main())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("C stderr via fputs" in m for m in warned), caplog.text
    assert any("C perror: Success" in m for m in warned), caplog.text
    assert "C stderr via fputs" not in server.log_text()


@pytest.mark.parametrize("how", [
    "exit", "abort",
    pytest.param("segv", marks=pytest.mark.skipif(
        os.environ.get("RM_SANITIZED") == "1",
        reason="ASan's SEGV handler reports the deliberate segfault")),
])
def test_what_a_dying_worker_wrote_last_arrives(server, caplog, how):
    """The front reads the worker's stdout and stderr, and what a dead
    worker left in them: none of these last words is lost, none comes
    twice. (When the worker read its own pipes, a worker that died between
    its read and its send lost what it had read.) On a fatal signal, the
    fault handler's Python traceback comes too."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            for i in range(5):
                t = await client.create_proxy(Talker())
                with pytest.raises(rx.WorkerDiedError):
                    await t.last_words(f"{how}-{i}", how)
    with caplog.at_level(logging.INFO, logger="remotemedia"):
        run(main())
    text = caplog.text
    for i in range(5):
        assert f"stdout {how}-{i}" in text, text
        assert f"stderr {how}-{i}" in text, text
        assert text.count(f"stderr {how}-{i}") == 1, text  # and only once
    if how == "segv":
        assert "Fatal Python error: Segmentation fault" in text, text
        assert "in last_words" in text, text
    server.wait_idle()


def test_the_worker_holds_its_own_ends_of_its_output_pipes(server):
    """The output pipes come from the front on fds 4-7: the worker holds
    each pipe twice (its write end on 1 or 2, a read end it polls), not
    more, and user code's children get no read end."""
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            return await t.open_fds()
    links, child = run(main())
    for fd in (1, 2):
        assert links[fd].startswith("pipe:") and links[fd].endswith(" write"), links
        pipe = links[fd].split()[0]
        ends = [v for v in links.values() if v.split()[0] == pipe]
        assert sorted(ends) == [pipe + " read", pipe + " write"], links
    # The child's own listing holds 0, 1, 2 and the directory it reads.
    assert len(eval(child)) == 4, child


def test_print_and_logging_arrive_as_output(server, caplog):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            assert await t.talk(3) == 3
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "logged warning" not in caplog.text:
                await asyncio.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="remotemedia"):
        run(main())
    for i in range(3):
        assert f"line {i}" in caplog.text
    assert "logged warning" in caplog.text
    # The root logger, set up once the call imported logging: INFO and up,
    # with level and name.
    assert "INFO:talker:logged info" in caplog.text
    assert "[session " in caplog.text


def _raw_outputs(server, calls):
    """Make calls (name, args) in turn on a Talker over a raw HTTP/2
    session, then half-close it: its Outputs as (stream, data, dropped),
    split at each call's result, and the seconds the session took."""
    from h2raw import H2Client, call_msgs, open_session, pump, server_msgs
    c = H2Client(server.host, server.port, timeout=60)
    try:
        t0 = time.monotonic()
        sid = open_session(c, Talker())
        r = c.responses[sid]
        for i, (name, args) in enumerate(calls, 1):
            c.send(sid, call_msgs(i, name, args))
            deadline = time.monotonic() + 60
            while not any(m.WhichOneof("msg") == "result" and m.result.call_id == i
                          for m in server_msgs(r.data)):
                assert not r.ended and time.monotonic() < deadline, r.trailers
                pump(c, 0.2)
        c.send(sid, b"", end=True)
        c.wait(sid, 60)
        took = time.monotonic() - t0
        assert r.ended and r.trailers.get("grpc-status") == "0", r.trailers
        msgs = server_msgs(r.data)
    finally:
        c.close()
    parts = [[]]
    for m in msgs:
        if m.WhichOneof("msg") == "result":
            parts.append([])
        elif m.WhichOneof("msg") == "output":
            parts[-1].append((m.output.stream, m.output.data, m.output.dropped_bytes))
    return parts, took


def test_what_each_call_printed_comes_before_its_answer(server):
    """The worker sends Flush before an answer while its pipes hold bytes,
    and the front reads them then: call after call, all that a call
    printed is in the stream before its result."""
    parts, _ = _raw_outputs(server, [("talk", (50,))] * 20)
    for i, before in enumerate(parts[:20]):
        out = b"".join(d for s, d, _ in before if s == 0)
        assert out == b"".join(b"line %d\n" % j for j in range(50)), (i, out[-200:])


def test_the_front_caps_output_and_counts_every_byte(server):
    """The front reads the worker's pipes under the cap: 64 KiB a second
    in bursts of 256 KiB. Every byte written is either sent or counted as
    dropped, by the end of the session."""
    parts, took = _raw_outputs(server, [("flood", (2,))])
    outs = [o for p in parts for o in p]
    sent = sum(len(d) for _, d, _ in outs)
    dropped = sum(n for _, _, n in outs)
    assert sent + dropped == 2 << 20, (sent, dropped)
    assert 0 < sent <= (256 << 10) + (64 << 10) * (took + 1), (sent, took)
    assert dropped > 0


def test_output_over_the_cap_goes_in_whole_parts(server):
    """Over the cap, what the bucket earns is not sent in crumbs as it
    comes (an Output of the few bytes earned between two writes): a part
    waits for 4 KiB of tokens."""
    t0 = time.monotonic()
    parts, _ = _raw_outputs(server, [("dribble", (1 << 20, 1, 0)),
                                     ("dribble", (10000, 20, 0.05))])
    took = time.monotonic() - t0
    sizes = [len(d) for _, d, _ in parts[1] if d]  # the second call's
    assert sizes and all(n >= 4096 for n in sizes), sizes
    assert len(sizes) <= 2 + 16 * took, (sizes, took)
    total = sum(len(d) + n for p in parts for _, d, n in p)
    assert total == (1 << 20) + 200000


def test_output_is_rate_capped(server, caplog):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            t = await client.create_proxy(Talker())
            assert await t.flood(8) == 8
            await asyncio.sleep(0.5)
    with caplog.at_level(logging.INFO, logger="remotemedia"):
        run(main())
    shown = sum(len(r.getMessage()) for r in caplog.records)
    assert shown < 4 * 1024 * 1024
    assert "dropped" in caplog.text


# --- lifecycle ----------------------------------------------------------------------

def client_connections(port: int) -> int:
    """This host's established TCP connections to port."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
                    n += 1
    return n


def test_a_client_that_exits_leaves_no_connection_open(fresh_server):
    """Each session was a reference cycle that held its gRPC call, and so
    the closed channel's connection, until Python's cycle collector ran:
    30 clients in a row left 12 connections open on the server, counting
    against --max-connections. A proxy kept after its client exited holds
    no connection either."""
    srv = fresh_server(["--sandbox", "off"])
    before = client_connections(srv.port)

    async def main():
        kept = []
        for _ in range(10):
            async with RemoteProxyClient(srv.config()) as client:
                v = await client.create_proxy(Values())
                assert await v.echo(1) == 1
                kept.append(v)
            for _ in range(50):  # the channel's close is asynchronous
                if client_connections(srv.port) == before:
                    break
                await asyncio.sleep(0.05)
            assert client_connections(srv.port) == before
    run(main())


def test_connect_disconnect_and_close_proxy(server):
    async def main():
        client = RemoteProxyClient(server.config())
        await client.connect()
        v = await client.create_proxy(Values())
        assert await v.echo(1) == 1
        await client.close_proxy(v)
        with pytest.raises(rx.RemoteMediaError):
            await v.echo(1)
        w = await client.create_proxy(Values())
        assert await w.echo(2) == 2
        await client.disconnect()
    run(main())
    server.wait_idle()


def test_lost_connection_fails_pending_calls(fresh_server):
    srv = fresh_server()

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20)) as client:
            s = await client.create_proxy(Slow())
            pending = asyncio.ensure_future(s.sleep(10))
            await asyncio.sleep(0.3)
            srv.proc.kill()
            srv.proc.wait()
            with pytest.raises(rx.RemoteMediaError) as e:
                await pending
            assert "connection" in str(e.value).lower() or "unavailable" in str(e.value).lower()
            with pytest.raises(rx.RemoteMediaError):
                await s.count()
    run(main())


def test_proxy_has_no_public_helpers(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            v = await client.create_proxy(Values())
            assert [n for n in dir(v) if not n.startswith("_")] == []
            # a name missing from the attribute map is still forwarded
            with pytest.raises(AttributeError):
                await v.close()
    run(main())


# --- the loop: plain until the session needs asyncio --------------------------------

class Plain:
    """Code whose pickle never names the event loop's module (it builds the
    name at run time: a pickle that holds it opens on that loop): its session
    runs on the worker's plain loop until it calls an async method or async
    generator. Markers go to the session's directory."""

    def __init__(self, marker_dir="."):
        self.marker_dir = marker_dir

    def loop_module_loaded(self):
        return "".join(("async", "io")) in sys.modules

    def module_loaded(self, name):
        return name in sys.modules

    def echo(self, x):
        return x

    def sleep(self, s):
        time.sleep(s)
        return "done"

    def busy(self, s):
        end = time.monotonic() + s
        while time.monotonic() < end:
            pass

    def forever(self, tag):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            with open(os.path.join(self.marker_dir, tag), "w") as f:
                f.write("closed")

    def has(self, tag):
        return os.path.exists(os.path.join(self.marker_dir, tag))

    def loop_running(self):
        aio = __import__("".join(("async", "io")))
        try:
            aio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def run_coroutine(self):
        aio = __import__("".join(("async", "io")))

        async def five():
            return 5
        return aio.run(five())

    async def twice(self, x):
        return 2 * x

    async def acount(self, n):
        for i in range(n):
            yield i


class NamesAsyncio:
    """Code that names asyncio: the session opens on its loop."""

    def __init__(self):
        self.opened_on = None

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.opened_on = asyncio.get_running_loop()

    def loop_running(self):
        return asyncio.get_running_loop() is self.opened_on


def test_a_session_that_needs_no_asyncio_never_imports_it(server):
    async def main():
        async with RemoteProxyClient(server.config(timeout=1.0)) as client:
            p = await client.create_proxy(Plain())
            assert await p.loop_module_loaded() is False
            # Nor inspect (640 KiB), which its attribute map did without.
            assert await p.module_loaded("inspect") is False
            assert await asyncio.gather(*(p.echo(i) for i in range(50))) == list(range(50))
            for method in ("sleep", "busy"):
                with pytest.raises(TimeoutError):
                    await getattr(p, method)(30)
            async for x in p.forever("brk"):
                if x == 2:
                    break
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not await p.has("brk"):
                await asyncio.sleep(0.02)
            assert await p.has("brk")
            assert await p.loop_module_loaded() is False
            assert await p.module_loaded("inspect") is False
    run(main())


def test_a_session_moves_to_asyncio_when_it_needs_it(server):
    async def main():
        async with RemoteProxyClient(server.config(timeout=1.0)) as client:
            # A call that imports asyncio (by a name built at run time)
            # runs no loop, nor do the next; the first async method starts
            # one, for good.
            p = await client.create_proxy(Plain())
            assert await p.loop_running() is False
            assert await p.run_coroutine() == 5
            assert await p.loop_running() is False
            assert await p.twice(4) == 8
            assert await p.loop_running() is True
            with pytest.raises(RemoteExecutionError):
                await p.run_coroutine()  # asyncio.run() in a running loop
            with pytest.raises(TimeoutError):
                await p.sleep(30)

            # An async method, then an async generator: state carries over.
            q = await client.create_proxy(Plain())
            it = (await q.forever("moved")).__aiter__()
            assert await it.__anext__() == 0
            assert await q.loop_module_loaded() is False
            assert await q.twice(21) == 42
            assert [await it.__anext__() for _ in range(3)] == [1, 2, 3]
            await it.aclose()
            assert await q.loop_running() is True
            assert [x async for x in q.acount(3)] == [0, 1, 2]
            with pytest.raises(TimeoutError):
                await q.busy(30)
            assert await asyncio.gather(*(q.echo(i) for i in range(20))) == list(range(20))

            r = await client.create_proxy(Plain())
            assert [x async for x in r.acount(2)] == [0, 1]
            assert await r.loop_running() is True

            # Code that names asyncio finds the session's loop running at once.
            n = await client.create_proxy(NamesAsyncio())
            assert await n.loop_running() is True
    run(main())
