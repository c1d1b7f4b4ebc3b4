"""remotemedia-worker driven directly through a fake front (workerlib).

No remotemediad here: these tests pin down the worker's half of the
socketpair protocol (proto/worker.proto, docs/protocol.md). The `front`
fixture (tests/lib/fixtures.py) makes the fake fronts.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q tests/integration/test_worker_direct.py
"""

import abc
import asyncio
import collections
import dataclasses
import enum
import functools
import inspect
import json
import logging
import os
import pickle
import subprocess
import sys
import time

import cloudpickle
import pytest

import workerlib
from workerlib import CHUNK, Fatal, RemoteError, pb

pytestmark = pytest.mark.skipif(not workerlib.WORKER.exists(),
                                reason="make build/remotemedia-worker first")

# The objects below travel by value, as the client sends __main__ classes.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

STDOUT, STDERR = 0, 1


class Boom(Exception):
    pass


class Sample:
    """Every kind of attribute, and a trace of what ran."""

    limit = 10

    def __init__(self):
        self.value = 41
        self.getter_runs = 0
        self.produced = 0
        self.closed = False
        self.aclosed = False
        self.callback = len
        self._event = None

    @property
    def prop(self):
        self.getter_runs += 1
        return "computed"

    @staticmethod
    def static_add(a, b):
        return a + b

    @classmethod
    def make(cls):
        return cls.__name__

    def add(self, a, b=0):
        return a + b

    async def async_add(self, a, b=0):
        await asyncio.sleep(0.01)
        return a + b

    def gen(self, n=None):
        i = 0
        try:
            while n is None or i < n:
                self.produced += 1
                yield i
                i += 1
        finally:
            self.closed = True

    async def agen(self, n):
        try:
            for i in range(n):
                self.produced += 1
                await asyncio.sleep(0)
                yield i * 10
        finally:
            await asyncio.sleep(0)
            self.aclosed = True

    def marker_gen(self):
        try:
            while True:
                yield "tick"
        finally:
            with open(os.path.join(os.getcwd(), "finally.marker"), "w") as f:
                f.write("closed\n")

    def fail(self):
        raise ValueError("bad value 7")

    def fail_custom(self):
        raise Boom("custom boom")

    def gen_fail(self):
        yield 1
        raise KeyError("gen broke")

    def echo(self, data):
        return data

    def size(self, data):
        return len(data)

    def blob(self, n):
        return bytes(range(256)) * (n // 256)

    def big_gen(self, n):
        while True:
            yield b"y" * n

    def get_set(self):
        return {1, 2}

    def get_list(self):
        return [1, "two", {"three": 3}]

    def sleep(self, s):
        time.sleep(s)
        return "slept"

    def spin(self):
        while True:
            pass

    def itimer(self):
        """Seconds left on the deadline timer, as this call sees it."""
        import signal
        return signal.getitimer(signal.ITIMER_REAL)[0]

    async def async_sleep(self, s):
        await asyncio.sleep(s)
        return "slept"

    async def async_spin(self):
        while True:
            pass

    def slow_gen(self):
        yield "fast"
        time.sleep(100)
        yield "never"

    async def slow_agen(self):
        try:
            yield "fast"
            await asyncio.sleep(100)
            yield "never"
        finally:
            self.aclosed = True

    async def async_make_gen(self, n):
        await asyncio.sleep(0)
        return self.gen(n)

    def forked(self):
        import _rmworker
        fd = _rmworker.fileno()  # the socket, moved off fd 3 at start
        ino = os.fstat(fd).st_ino
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(1 if os.fstat(fd).st_ino == ino else 0)
            except OSError:
                os._exit(0)
        return os.waitpid(pid, 0)[1]

    def _ev(self):
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def waiter(self):
        await self._ev().wait()
        return "woken"

    async def setter(self):
        self._ev().set()
        return "set"

    def talk(self):
        print("hello from print")
        logging.info("hello from logging")
        sys.stderr.write("raw stderr\n")
        subprocess.run(["echo", "hello from a subprocess"], check=True)
        return "talked"

    def flood(self, n):
        sys.stdout.write("x" * n)
        sys.stdout.flush()
        return n

    def die_after_writing(self):
        os.write(1, b"last words\n")
        os._exit(5)

    def executable(self):
        return sys.executable

    def cwd(self):
        return os.getcwd()


class Slotted:
    __slots__ = ("a",)

    def __init__(self):
        self.a = 1



# Objects whose attribute maps the worker builds as inspect.getattr_static
# would (the worker does without inspect where it can): the zoo of
# test_attribute_maps_are_what_inspect_finds.

async def _coro(a, b):
    return a + b


class Shadowing:
    """Instance attributes over class attributes of every sort."""

    x = 1

    def run(self):
        return 1

    @property
    def p(self):
        return 2

    def gen(self):
        yield 1

    def __init__(self):
        self.run = 5                  # shadows a method
        self.__dict__["p"] = "raw"    # under a data descriptor, which wins
        self.x = len                  # a callable over a plain class value
        self.later = functools.partial(_coro, 1)
        self.bound_gen = self.gen     # a bound generator method
        self.builtin = [].append


class SetOnly:
    """A descriptor with __set__ but no __get__."""

    def __set__(self, obj, value):
        pass


class SetOnlyHolder:
    field = SetOnly()
    other = SetOnly()

    def __init__(self):
        self.__dict__["field"] = 3    # no __get__: the instance's wins


class GetDel:
    """__get__ and __delete__, no __set__: under Python 3.11 an instance's
    own value of the name wins over it (from 3.12 on, it wins)."""

    def __get__(self, obj, objtype=None):
        return 0

    def __delete__(self, obj):
        pass


class SetMeta(type):
    def __set__(cls, obj, value):
        pass


class MetaSet(metaclass=SetMeta):
    """Its instances are data descriptors only through the metaclass."""


class AnswersAll:
    """Answers every name it lacks, _is_coroutine_marker included."""

    def __getattr__(self, name):
        return "anything"


class Holder:
    """Values of the three sorts above, the first under an instance value."""

    gd = GetDel()

    def __init__(self):
        self.__dict__["gd"] = 5
        self.meta_set = MetaSet()
        self.answers = AnswersAll()

    def loaded(self, name):
        return name in sys.modules


class FunctionLike:
    """What passes for a function: __code__ and a function's attributes
    (on the instance: cloudpickle sets a class's __name__ as its name)."""

    def __init__(self):
        self.__name__ = "like"
        self.__defaults__ = None
        self.__kwdefaults__ = None
        self.__annotations__ = {}
        self.__code__ = _coro.__code__

    def __call__(self):
        pass


class AlmostFunctionLike:
    """Without a __name__, the rest does not make a function."""

    def __init__(self):
        self.__defaults__ = None
        self.__kwdefaults__ = None
        self.__code__ = _coro.__code__

    def __call__(self):
        pass


class Things:
    like = FunctionLike()
    almost = AlmostFunctionLike()
    pm = functools.partialmethod(_coro, 1)
    nested = Slotted


class Base(abc.ABC):
    @abc.abstractmethod
    def must(self):
        ...

    async def agen(self):
        yield 1


class Concrete(Base):
    def must(self):
        return 1


class DictProperty:
    """Shadows __dict__: only inspect can tell what the instance holds."""

    def __init__(self):
        self.real = 1

    @property
    def __dict__(self):
        return {"fake": 1}

    def method(self):
        return 1


class WithDictSlot:
    __slots__ = ("__dict__", "a")

    def __init__(self):
        self.a = 1
        self.b = 2


class Dynamic:
    def __getattr__(self, name):
        if name == "ghost":
            return 1
        raise AttributeError(name)

    def __dir__(self):
        return ["ghost", "real"]

    def real(self):
        return 1


class Meta(type):
    def meta_method(cls):
        return 1


class Classy(metaclass=Meta):
    """Sent as the class itself (dir() of a class leaves its metaclass's
    attributes out)."""

    @classmethod
    def cm(cls):
        return 1

    @staticmethod
    async def sm():
        return 1

    def plain(self):
        return 1


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int = 1
    b: str = "x"


Point = collections.namedtuple("Point", "x y")


class Items(list):
    def extra(self):
        return 1


def inspect_attribute_map(obj):
    """The attribute map as the worker made it with inspect."""
    kinds = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, (property, functools.cached_property)):
            kinds[name] = pb.ATTR_PROPERTY
        elif inspect.ismemberdescriptor(value):
            kinds[name] = pb.ATTR_ATTRIBUTE
        elif inspect.isdatadescriptor(value):
            kinds[name] = pb.ATTR_PROPERTY
        elif inspect.isasyncgenfunction(value):
            kinds[name] = pb.ATTR_ASYNC_GENERATOR
        elif inspect.iscoroutinefunction(value):
            kinds[name] = pb.ATTR_ASYNC_METHOD
        elif inspect.isgeneratorfunction(value):
            kinds[name] = pb.ATTR_GENERATOR
        elif callable(value):
            kinds[name] = pb.ATTR_METHOD
        else:
            kinds[name] = pb.ATTR_ATTRIBUTE
    return kinds


SOURCE = '''
class Adder:
    def __init__(self, base, scale=1):
        self.base = base
        self.scale = scale

    def add(self, x):
        return (self.base + x) * self.scale

    def oops(self):
        raise RuntimeError("from source")
'''


@pytest.fixture
def w(front):
    """A worker with a Sample open."""
    f = front()
    f.open(Sample())
    return f


# Open and Ready ------------------------------------------------------------------


# The runtime: compiled at build time, or from its source on another Python.
OTHER_BYTECODE_PYTHON = """#!/bin/sh
# The build's Python, except that embed-source's output claims a bytecode
# magic number that no CPython has.
case "$1" in
*embed-source)
	/usr/bin/python3 "$@" > "$0.out" || exit 1
	sed 's/_magic = [0-9-]*L;/_magic = 1L;/' "$0.out" ;;
*) exec /usr/bin/python3 "$@" ;;
esac
"""


@pytest.fixture(scope="module")
def other_bytecode_worker(tmp_path_factory):
    """A build of the worker whose embedded runtime was compiled for another
    bytecode, as when the host's Python differs from the one that built it."""
    d = tmp_path_factory.mktemp("other-bytecode")
    python = d / "python"
    python.write_text(OTHER_BYTECODE_PYTHON)
    python.chmod(0o755)
    build = d / "build"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CFLAGS", "LDFLAGS")}
    subprocess.run(["make", "-s", "-C", str(workerlib.ROOT), f"BUILD={build}",
                    f"PYTHON={python}", f"{build}/remotemedia-worker"],
                   env=env, check=True, capture_output=True, timeout=600)
    return build / "remotemedia-worker"


def test_the_runtime_comes_compiled_at_build_time(front):
    f = front()
    f.open(Sample())
    assert f.call_value("add", 1, 2) == 3
    log = f.worker_log()
    for module in ("_remotemedia_oob", "_remotemedia_runtime"):
        assert f"{module}: compiled at build time" in log, log
    assert "compiling its source" not in log, log


def test_a_runtime_built_for_another_bytecode_is_compiled_from_source(
        front, other_bytecode_worker, monkeypatch):
    monkeypatch.setattr(workerlib, "WORKER", other_bytecode_worker)
    f = front()
    ready = f.open(Sample())
    assert dict(ready.attributes)["async_add"] == pb.ATTR_ASYNC_METHOD
    assert f.call_value("add", 1, 2) == 3
    assert f.call_value("async_add", 2, 3) == 5
    e = f.error(f.send_call("fail"))
    assert e.message == "bad value 7" and "_worker_runtime" not in e.traceback
    log = f.worker_log()
    for module in ("_remotemedia_oob", "_remotemedia_runtime"):
        assert f"{module} was compiled for bytecode 1, this Python has" in log, log
    assert "compiled at build time" not in log, log


def test_ready_attribute_map(front):
    f = front()
    ready = f.open(Sample())
    kinds = dict(ready.attributes)
    assert kinds["add"] == pb.ATTR_METHOD
    assert kinds["async_add"] == pb.ATTR_ASYNC_METHOD
    assert kinds["gen"] == pb.ATTR_GENERATOR
    assert kinds["agen"] == pb.ATTR_ASYNC_GENERATOR
    assert kinds["prop"] == pb.ATTR_PROPERTY
    assert kinds["value"] == pb.ATTR_ATTRIBUTE
    assert kinds["limit"] == pb.ATTR_ATTRIBUTE
    assert kinds["static_add"] == pb.ATTR_METHOD
    assert kinds["make"] == pb.ATTR_METHOD
    assert kinds["callback"] == pb.ATTR_METHOD  # a callable plain value
    assert not any(k.startswith("_") for k in kinds)
    assert ready.session_id == "test-session"
    assert ready.python_version == workerlib.PY_VERSION
    assert ready.cloudpickle_version == cloudpickle.__version__
    assert ready.protocol == pb.PROTOCOL_V1
    # Building the map ran no property getter.
    assert f.get("getter_runs") == 0
    assert f.get("prop") == "computed"
    assert f.get("getter_runs") == 1


def test_slots_are_attributes(front):
    f = front()
    assert dict(f.open(Slotted()).attributes) == {"a": pb.ATTR_ATTRIBUTE}
    assert f.get("a") == 1



ZOO = [Sample, Slotted, Shadowing, SetOnlyHolder, Holder, Things, Concrete,
       DictProperty, WithDictSlot, Dynamic, lambda: Classy, lambda: Colour.RED,
       Frozen, lambda: Point(1, 2), Items]


@pytest.mark.parametrize("make", ZOO, ids=lambda m: getattr(m, "__name__", "?"))
def test_attribute_maps_are_what_inspect_finds(front, make):
    obj = make()
    kinds = dict(front().open(obj).attributes)
    assert kinds == inspect_attribute_map(obj)


def test_an_attribute_map_runs_no_lookup_of_the_values_own(front):
    """The map finds what it needs in namespaces: a value that answers every
    name is not asked one (which would import inspect on the way)."""
    f = front()
    obj = Holder()
    assert dict(f.open(obj).attributes) == inspect_attribute_map(obj)
    assert f.call_value("loaded", "inspect") is False


def test_attribute_maps_of_the_zoo_cover_every_kind():
    """The zoo above is worth its keep: it has every kind, and the cases
    that the worker's own lookup decides differently from a naive one."""
    shadowing = inspect_attribute_map(Shadowing())
    assert shadowing["run"] == pb.ATTR_ATTRIBUTE
    assert shadowing["p"] == pb.ATTR_PROPERTY
    assert shadowing["x"] == pb.ATTR_METHOD
    assert shadowing["later"] == pb.ATTR_ASYNC_METHOD
    assert shadowing["bound_gen"] == pb.ATTR_GENERATOR
    assert inspect_attribute_map(SetOnlyHolder()) == {
        "field": pb.ATTR_ATTRIBUTE, "other": pb.ATTR_PROPERTY}
    holder = inspect_attribute_map(Holder())
    assert holder["gd"] == (pb.ATTR_ATTRIBUTE if sys.version_info < (3, 12)
                            else pb.ATTR_PROPERTY)
    assert holder["meta_set"] == pb.ATTR_PROPERTY
    assert holder["answers"] == pb.ATTR_ATTRIBUTE
    things = inspect_attribute_map(Things())
    assert (things["like"], things["almost"], things["pm"]) == (
        pb.ATTR_ASYNC_METHOD, pb.ATTR_METHOD, pb.ATTR_ATTRIBUTE)
    assert inspect_attribute_map(Concrete())["agen"] == pb.ATTR_ASYNC_GENERATOR
    assert inspect_attribute_map(DictProperty()) == {"method": pb.ATTR_METHOD}
    assert inspect_attribute_map(Dynamic()) == {"real": pb.ATTR_METHOD}
    assert inspect_attribute_map(Classy) == {
        "cm": pb.ATTR_METHOD, "plain": pb.ATTR_METHOD, "sm": pb.ATTR_ASYNC_METHOD}


def test_worker_environment(w):
    assert w.call_value("executable") == "/usr/bin/python3"
    assert w.call_value("cwd") == str(w.session_dir)


# Calls ----------------------------------------------------------------------------


def test_sync_async_and_get(w):
    assert w.call_value("add", 2, b=3) == 5
    assert w.call_value("async_add", 4, b=5) == 9
    assert w.call_value("static_add", 1, 1) == 2
    assert w.call_value("make") == "Sample"
    assert w.get("value") == 41
    assert w.get("limit") == 10
    assert w.get("prop") == "computed"


def test_errors_carry_type_module_traceback(w):
    e = w.error(w.send_call("fail"))
    assert (e.type, e.module, e.qualname) == ("ValueError", "builtins",
                                              "ValueError")
    assert e.message == "bad value 7"
    assert "Traceback (most recent call last)" in e.traceback
    assert 'raise ValueError("bad value 7")' in e.traceback
    assert "_worker_runtime" not in e.traceback
    assert not e.timeout
    exc = pickle.loads(e.pickled)
    assert isinstance(exc, ValueError) and exc.args == ("bad value 7",)

    e = w.error(w.send_call("fail_custom"))
    assert e.type == "%s.Boom" % __name__
    assert (e.module, e.qualname) == (__name__, "Boom")
    assert type(pickle.loads(e.pickled)).__name__ == "Boom"

    e = w.error(w.send_call("missing"))
    assert e.type == "AttributeError" and "missing" in e.message

    e = w.error(w.send_call("add"))  # a missing argument
    assert e.type == "TypeError"
    # The session goes on after errors.
    assert w.call_value("add", 1, 1) == 2


def test_sync_calls_run_in_order(w):
    ids = [w.send_call("add", i, 1) for i in range(20)]
    order = []
    w.read_until(lambda: all(w.inbox[i] for i in ids))
    for i in ids:
        order.append(w.result(i))
    assert order == [i + 1 for i in range(20)]


def test_async_calls_interleave(w):
    waiter = w.send_call("waiter")
    time.sleep(0.2)
    assert not w.inbox[waiter]
    setter = w.send_call("setter")
    assert w.result(setter) == "set"
    assert w.result(waiter) == "woken"


# Generators -----------------------------------------------------------------------


def test_generator_credit(w):
    g = w.start_generator("gen")
    time.sleep(0.2)
    assert w.get("produced") == 0  # nothing before the first Pull
    w.pull(g, 3)
    assert w.items(g, 3) == [0, 1, 2]
    w.drain(0.3)
    assert not w.inbox[g], "more items than the credit allowed"
    assert w.get("produced") == 3
    w.pull(g, 2)
    assert w.items(g, 2) == [3, 4]
    w.drain(0.3)
    assert not w.inbox[g]
    assert w.get("produced") == 5


def test_generator_exhaustion_and_error(w):
    g = w.start_generator("gen", 2)
    w.pull(g, 10)
    got = w.items(g, 3)
    assert got[:2] == [0, 1]
    assert got[2].kind == "end" and not got[2].msg.cancelled
    assert w.get("closed") is True

    g = w.start_generator("gen_fail")
    w.pull(g, 5)
    first, err = w.items(g, 2)
    assert first == 1
    assert err.kind == "error" and err.msg.type == "KeyError"
    assert "gen broke" in err.msg.message


def test_generator_cancel_runs_finally(w):
    g = w.start_generator("gen")
    w.pull(g, 2)
    assert w.items(g, 2) == [0, 1]
    assert w.get("closed") is False
    w.cancel(g)
    end = w.answer(g)
    assert end.kind == "end" and end.msg.cancelled
    assert w.get("closed") is True
    # A Pull or Cancel after the end is ignored.
    w.pull(g, 1)
    w.cancel(g)
    assert w.call_value("add", 1, 2) == 3
    assert not w.inbox[g]


def test_async_generator(w):
    g = w.start_generator("agen", 5)
    w.pull(g, 2)
    assert w.items(g, 2) == [0, 10]
    w.drain(0.3)
    assert not w.inbox[g]
    assert w.get("produced") == 2
    w.pull(g, 10)
    got = w.items(g, 4)
    assert got[:3] == [20, 30, 40]
    assert got[3].kind == "end" and not got[3].msg.cancelled
    assert w.get("aclosed") is True


def test_async_generator_cancel(w):
    g = w.start_generator("agen", 100)
    w.pull(g, 1)
    assert w.items(g, 1) == [0]
    w.cancel(g)
    end = w.answer(g)
    assert end.kind == "end" and end.msg.cancelled
    assert w.get("aclosed") is True


def test_async_method_returning_generator(w):
    g = w.start_generator("async_make_gen", 3)
    w.pull(g, 5)
    got = w.items(g, 4)
    assert got[:3] == [0, 1, 2] and got[3].kind == "end"


def test_cancel_pending_async_call(w):
    c = w.send_call("async_sleep", 100)
    time.sleep(0.2)
    w.cancel(c)
    e = w.error(c)
    assert e.type == "asyncio.CancelledError"
    assert (e.module, e.qualname) == ("asyncio.exceptions", "CancelledError")
    assert not e.timeout
    assert w.call_value("add", 1, 2) == 3


# Values -----------------------------------------------------------------------------


def test_large_argument_and_result(w):
    big = os.urandom(5 * 1024 * 1024 + 123)
    c = w.send_call("echo", big)
    a = w.answer(c, timeout=30)
    assert a.kind == "result"
    assert w.decode(a.data, a.buffer_sizes) == big
    assert len(a.chunks) >= 5
    assert all(n <= CHUNK for n in a.chunks)
    assert a.total_size == len(a.data)
    assert w.call_value("size", big, timeout=30) == len(big)


def test_large_generator_item(w):
    g = w.start_generator("big_gen", 3 * CHUNK + 5)
    w.pull(g, 2)
    for index in range(2):
        a = w.answer(g, timeout=30)
        assert a.kind == "item" and a.msg.index == index
        # The bytes go after the pickle, as an out-of-band buffer.
        assert a.buffer_sizes == (3 * CHUNK + 5,)
        assert a.chunks[1:] == [CHUNK] * 3 + [5] and a.chunks[0] < 100
        assert len(w.decode(a.data, a.buffer_sizes)) == 3 * CHUNK + 5
    w.cancel(g)
    assert w.answer(g).kind == "end"


def test_a_call_cancelled_while_it_waits_behind_another_never_runs(w):
    """Call and Cancel both queue while a sync call runs: the worker reads
    them together, and the cancelled call must not start (its side effect
    would happen after the client gave it up)."""
    slow = w.send_call("sleep", 0.5)
    time.sleep(0.1)
    doomed = w.send_call("add", 1)
    w.cancel(doomed)
    kept = w.send_call("add", 2, 3)
    assert w.result(slow) == "slept"
    e = w.error(doomed)
    assert (e.type, e.module, e.qualname) == (
        "asyncio.CancelledError", "asyncio.exceptions", "CancelledError")
    assert e.message == "cancelled by the client before it started" and not e.timeout
    assert w.result(kept) == 5
    w.drain(0.3)
    assert not w.inbox[doomed]  # one answer, and the Cancel added none
    assert w.call_value("add", 1, 2) == 3


def test_a_call_whose_deadline_passed_while_it_waited_never_runs(w):
    """The front says when a call's deadline passed (its clock starts when
    the call arrives): one still queued behind another never starts, and
    is answered as timed out; one that runs is left to its own alarm."""
    slow = w.send_call("sleep", 0.5)
    time.sleep(0.1)
    late = w.send_call("add", 1, timeout_ms=100)
    w.expired(late)
    assert w.result(slow) == "slept"
    e = w.error(late)
    assert (e.type, e.module, e.qualname) == ("TimeoutError", "builtins", "TimeoutError")
    assert e.timeout
    assert e.message == ("call to 'add' exceeded its deadline of 0.1s before it could "
                         "start (other calls held the session)")
    # Its arguments still arriving: answered by C, the rest dropped.
    call_id = w.next_id
    w.next_id += 1
    w.send(call=pb.Call(call_id=call_id, name="size", timeout_ms=100, args=pb.Value(
        call_id=call_id, seq=0, data=b"x" * 10, more=True)))
    w.expired(call_id)
    w.send(value=pb.Value(call_id=call_id, seq=1, data=b"y" * 10))
    e = w.error(call_id)
    assert e.type == "TimeoutError" and e.timeout
    assert e.message == "the call's deadline passed while its arguments were arriving"
    w.drain(0.3)
    assert not w.inbox[call_id] and not w.inbox[late]
    assert w.call_value("add", 1, 2) == 3


def test_the_fronts_deadline_ends_an_async_call_that_awaits(w):
    """The front's clock started when the call arrived: its word that the
    deadline passed times out an async call now, not when the worker's
    own clock (started later) would."""
    c = w.send_call("async_sleep", 100, timeout_ms=60000)
    time.sleep(0.2)
    t0 = time.monotonic()
    w.expired(c)
    e = w.error(c)
    assert e.timeout and e.type == "TimeoutError", e
    assert time.monotonic() - t0 < 5
    assert w.call_value("add", 1, 2) == 3


def test_calls_that_take_a_while_run_in_the_order_they_came(w):
    """Calls that each run over a millisecond, sent while others run: the
    worker reads fd 3 again between them (for a Cancel or an Expired), and
    what it reads must still run after what it read before."""
    import threading
    ids = []

    def send():  # a steady stream, as a pipelining client sends
        for _ in range(300):
            ids.append(w.send_call("sleep", 0.0015))
            time.sleep(0.0003)
    sender = threading.Thread(target=send)
    sender.start()
    sender.join(60)
    for i in ids:
        assert w.result(i, timeout=30) == "slept"
    assert [i for i in w.answered if i in set(ids)] == ids


def test_cancel_while_arguments_arrive(w):
    call_id = w.next_id
    w.next_id += 1
    w.send(call=pb.Call(call_id=call_id, name="size", args=pb.Value(
        call_id=call_id, seq=0, data=b"x" * 10, more=True)))
    w.cancel(call_id)
    w.send(value=pb.Value(call_id=call_id, seq=1, data=b"y" * 10))
    e = w.error(call_id)
    assert e.type == "asyncio.CancelledError"
    w.drain(0.3)
    assert not w.inbox[call_id]
    assert w.call_value("add", 1, 2) == 3


def test_slow_front_blocks_the_worker(w):
    c = w.send_call("blob", 8 * CHUNK)
    time.sleep(1.0)  # the socket buffer fills; the worker must wait
    assert w.proc.poll() is None
    a = w.answer(c, timeout=30)
    assert len(w.decode(a.data, a.buffer_sizes)) == 8 * CHUNK
    assert w.call_value("add", 1, 2) == 3


def test_value_over_the_limit(front):
    f = front(max_value_bytes=2 * 1024 * 1024)
    f.open(Sample())
    e = f.error(f.send_call("size", b"x" * (3 * 1024 * 1024)))
    assert "max_value_bytes" in e.message
    e = f.error(f.send_call("blob", 3 * 1024 * 1024))
    assert "max_value_bytes" in e.message
    assert f.call_value("size", b"x" * 1000) == 1000



def _args_with_buffer(data):
    """A call's pickled arguments (data,) with data out of band, as the
    client sends a large bytearray: the bytes, and their buffer_sizes."""
    buffers = []
    pickled = pickle.dumps(((pickle.PickleBuffer(bytearray(data)),), {}),
                           protocol=5, buffer_callback=buffers.append)
    raws = [bytes(b.raw()) for b in buffers]
    return pickled + b"".join(raws), [len(r) for r in raws]


@pytest.mark.parametrize("buffered", [False, True], ids=["bytes", "bytearray"])
@pytest.mark.parametrize("announced", [0, 1, 2], ids=["unannounced", "exact", "over"])
def test_arguments_gathered_whatever_size_was_announced(w, buffered, announced):
    """The worker gathers chunks straight into the object user code gets:
    it must come out whole whether the total was announced, exact or more
    than arrived."""
    big = os.urandom(3 * CHUNK + 77)
    if buffered:
        data, sizes = _args_with_buffer(big)
    else:
        data, sizes = cloudpickle.dumps(((big,), {}), protocol=5), []
    total = (0, len(data), len(data) + 5 * CHUNK)[announced]
    c = w.send_call("size", raw_args=data, total_size=total, buffer_sizes=sizes)
    assert w.result(c, timeout=30) == len(big)
    c = w.send_call("echo", raw_args=data, total_size=total, buffer_sizes=sizes)
    assert bytes(w.result(c, timeout=30)) == big


def test_json_arguments_exactly_as_they_came(front):
    """JSON reads every byte it is given (pickle stops at its STOP), so it
    shows that arguments announced larger than they came are cut to what
    arrived, and that a first chunk may be empty."""
    f = front(fmt="json")
    f.open(Sample())
    text = "x" * (2 * CHUNK + 10)
    data = json.dumps({"args": [text], "kwargs": {}}).encode()
    c = f.send_call("size", raw_args=data, total_size=len(data) + 3 * CHUNK)
    assert f.result(c, timeout=30) == len(text)
    call_id = f.next_id
    f.next_id += 1
    f.send(call=pb.Call(call_id=call_id, name="size", args=pb.Value(
        call_id=call_id, seq=0, data=b"", more=True)))
    f._send_rest(call_id, [b""] + f._chunks(data))
    assert f.result(call_id, timeout=30) == len(text)


@pytest.mark.skipif(os.environ.get("RM_SANITIZED") == "1",
                    reason="ASan reports every allocation it refuses")
@pytest.mark.parametrize("buffered", [False, True], ids=["bytes", "bytearray"])
def test_announced_size_that_cannot_be_allocated(front, buffered):
    """A total no memory can hold (under a limit set that high) answers
    that call with MemoryError; the session goes on."""
    f = front(max_value_bytes=1 << 62)
    f.open(Sample())
    call_id = f.next_id
    f.next_id += 1
    f.send(call=pb.Call(call_id=call_id, name="size", args=pb.Value(
        call_id=call_id, seq=0, data=b"x" * 10, more=True, total_size=1 << 61,
        buffer_sizes=[5] if buffered else [])))
    e = f.error(call_id)
    assert e.type == "MemoryError", e
    assert "cannot allocate 2305843009213693952 bytes" in e.message, e.message
    f.send(value=pb.Value(call_id=call_id, seq=1, data=b"y" * 10))
    f.drain(0.3)
    assert not f.inbox[call_id]
    assert f.call_value("add", 1, 2) == 3


# JSON -------------------------------------------------------------------------------


def test_json_format(front):
    f = front(fmt="json")
    ready = f.open(Sample())
    assert dict(ready.attributes)["add"] == pb.ATTR_METHOD
    assert f.call_value("add", 2, b=40) == 42
    assert f.call_value("get_list") == [1, "two", {"three": 3}]
    e = f.error(f.send_call("get_set"))
    assert e.type == "TypeError"
    assert e.message == ("result of 'get_set' is not JSON serializable: "
                         "Object of type set is not JSON serializable")
    assert e.pickled == b""
    g = f.start_generator("gen", 2)
    f.pull(g, 2)
    assert f.items(g, 2) == [0, 1]
    e = f.error(f.send_call("add", raw_args=b"not json"))
    assert e.type == "TypeError"
    # A misspelt key called with no arguments: it is refused.
    e = f.error(f.send_call("add", raw_args=b'{"arg": [1, 2]}'))
    assert e.type == "TypeError"
    assert e.message == ("the arguments of 'add': unknown key 'arg': only \"args\" and "
                         "\"kwargs\" are allowed"), e.message


def _strict_json(raw):
    """What the worker answers to raw arguments: json.loads's value (no
    NaN or Infinity), as JSON; or None where json.loads refuses them."""
    def refuse(x):
        raise ValueError(x)

    def finite(text):
        value = float(text)
        if value - value != 0.0:
            raise ValueError(text)
        return value
    try:
        doc = json.loads(raw, parse_constant=refuse, parse_float=finite)
        return json.loads(json.dumps(doc["args"][0]))
    except (ValueError, RecursionError):
        return None


def test_json_reads_and_writes_as_json_does(front):
    """The worker reads and writes JSON with json's C half, and asks json
    itself what that cannot do (other encodings) and why a document is
    refused: the answers are json's, byte for byte and message for
    message."""
    f = front(fmt="json")
    f.open(Sample())
    cases = [
        b'{"args": [[1, 2.5, "x", null, true, {"k": [false]}]], "kwargs": {}}',
        b' \t\r\n{"args": ["spaced"]} \n\t ',
        b'\xef\xbb\xbf{"args": ["BOM"]}',
        '{"args": ["utf-16 \u00e9"]}'.encode("utf-16"),
        '{"args": ["utf-32"]}'.encode("utf-32-le"),
        b'{"args": ["\\ud83d\\ude00 \xe2\x98\x83 \\u0000"]}',
        b'{"args": [[123456789012345678901234567890, -0.0, 1e308, 1E-7]]}',
        b'{"args": [1]} x',
        b'{"args": [1]}{"args": [2]}',
        b'{"args": [NaN]}',
        b'{"args": [Infinity]}',
        b'{"args": [1e400]}',
        b'{"args": ["\x00"]}',
        b'{"args": ["\xff"]}',
        b'{"args": [1,]}',
        b'{"args": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        b"   ",
    ]
    for raw in cases:
        want = _strict_json(raw)
        got = f.answer(f.send_call("echo", raw_args=raw))
        if want is None:
            assert got.kind == "error", (raw[:40], got)
            assert got.msg.type == "TypeError", (raw[:40], got.msg)
            assert got.msg.message.startswith("invalid JSON in the arguments"), got.msg.message
            try:
                json.loads(raw)
            except (ValueError, RecursionError) as exc:
                assert str(exc) in got.msg.message, (str(exc), got.msg.message)
        else:
            assert got.kind == "result", (raw[:40], got)
            assert f.decode(got.data, got.buffer_sizes) == want, raw[:40]

    # Writing: json.dumps(allow_nan=False), errors and all.
    for value in (["a\u00e9\u2603\U0001f600", {"1": [None, True, 2.5e-300]}],
                  {"nested": [[[[]]]], "": ""}, "plain", 7, -1.5, None):
        data = f.answer(f.send_call("echo", value))
        assert data.kind == "result" and bytes(data.data) == json.dumps(value, allow_nan=False).encode()
    e = f.error(f.send_call("get_set"))
    assert e.message.endswith("Object of type set is not JSON serializable")


def test_json_source_object(front):
    f = front(fmt="json")
    ready = f.open(source=SOURCE, class_name="Adder",
                   init_args={"args": [1], "kwargs": {"scale": 10}})
    assert dict(ready.attributes) == {"add": pb.ATTR_METHOD,
                                      "oops": pb.ATTR_METHOD,
                                      "base": pb.ATTR_ATTRIBUTE,
                                      "scale": pb.ATTR_ATTRIBUTE}
    assert f.call_value("add", 2) == 30
    e = f.error(f.send_call("oops"))
    assert e.type == "RuntimeError"
    assert 'raise RuntimeError("from source")' in e.traceback


def test_source_compiles_as_compile_would(front):
    """The worker compiles source itself (_rmworker.compile), as compile()
    does a str: text already decoded, whatever a coding line says; a
    syntax error refuses the Open with its line."""
    f = front(fmt="json")
    source = ("# -*- coding: latin-1 -*-\n"
              "class Text:\n"
              "    def word(self):\n"
              "        return 'caf\u00e9 \u2603'\n")
    f.open(source=source, class_name="Text", init_args={"args": [], "kwargs": {}})
    assert f.call_value("word") == "caf\u00e9 \u2603"

    g = front("broken", fmt="json")
    with pytest.raises(Fatal) as exc:
        g.open(source="class Broken:\n    def f(:\n        pass\n",
               class_name="Broken", init_args={"args": [], "kwargs": {}})
    assert exc.value.code == 9  # FAILED_PRECONDITION
    assert ("SyntaxError: invalid syntax (<remotemedia source>, line 2)"
            in exc.value.message), exc.value.message


# The loop: plain until the session needs the event loop -------------------------------


class _Yield:
    """An awaitable that gives the loop one turn, without naming its module."""

    def __await__(self):
        yield


class PlainSample:
    """Code whose pickle never names the event loop's module (the name is
    built at run time): the worker runs it on its plain loop, until grab()."""

    def loop_module_loaded(self):
        return "".join(("async", "io")) in sys.modules

    sleep = Sample.sleep
    spin = Sample.spin
    slow_gen = Sample.slow_gen
    marker_gen = Sample.marker_gen

    def ticks(self):
        while True:
            time.sleep(0.001)
            yield 0

    async def started(self):
        with open("started.marker", "w") as f:
            f.write("started\n")
        await _Yield()

    async def grab(self):
        """Open a file a few times across turns of the loop: each copy must
        read what the file holds."""
        with open("data.txt", "w") as f:
            f.write("x" * 1000)
        fds = [os.open("data.txt", os.O_RDONLY) for _ in range(4)]
        await _Yield()
        await _Yield()
        try:
            return [len(os.read(fd, 4096)) for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)


ASYNCIO_SOURCE = '''
import asyncio

class OnTheLoop:
    def __init__(self):
        self.loop = asyncio.get_running_loop()

    def same_loop(self):
        return asyncio.get_running_loop() is self.loop
'''


def test_plain_loop_deadlines_generators_and_end(front):
    f = front()
    f.open(PlainSample())
    assert f.call_value("loop_module_loaded") is False
    for method, args in (("sleep", (100,)), ("spin", ())):
        e = f.error(f.send_call(method, *args, timeout_ms=300), timeout=10)
        assert e.timeout and e.type == "TimeoutError", e
    g = f.start_generator("slow_gen")
    f.pull(g, 2, timeout_ms=300)
    first, err = f.items(g, 2)
    assert first == "fast"
    assert err.kind == "error" and err.msg.timeout
    assert f.call_value("sleep", 0.1, timeout_ms=5000) == "slept"
    g = f.start_generator("marker_gen")
    f.pull(g, 1)
    assert f.items(g, 1) == ["tick"]
    assert f.call_value("loop_module_loaded") is False
    f.sock.close()
    f.sock = None
    assert f.wait_exit() == 0
    assert (f.session_dir / "finally.marker").read_text() == "closed\n"


def test_the_move_to_the_event_loop_leaves_no_stale_descriptor(front):
    """A deadline that passed while another call ran woke the plain loop
    through its pipe; the pipe closes as the session moves to asyncio, and
    the descriptor number may be reused at once by user code."""
    for i in range(3):
        f = front("s%d" % i)
        f.open(PlainSample())
        g = f.start_generator("ticks")
        f.pull(g, 100000, timeout_ms=60)
        f.send_call("sleep", 0.4)
        time.sleep(0.02)
        assert f.result(f.send_call("grab"), timeout=10) == [1000] * 4
        f.stop()


def test_close_as_the_session_moves_to_the_event_loop(front):
    f = front()
    f.open(PlainSample())
    f.send_call("grab")
    f.close()  # most likely read in the same batch as the call
    assert f.wait_exit() == 0


def test_a_cancel_with_the_first_async_call_finds_it_not_started(front):
    """Call and Cancel read in one turn, the call being the session's first
    async one: the task starts after the turn, as on a running loop, and the
    Cancel stops it before its code runs."""
    f = front()
    f.open(PlainSample())
    f.send_call("sleep", 0.3)  # both frames wait until it returns
    c = f.send_call("started")
    f.cancel(c)
    e = f.error(c)
    assert e.type == "asyncio.CancelledError"
    assert not (f.session_dir / "started.marker").exists()
    assert f.result(f.send_call("started")) is None
    assert (f.session_dir / "started.marker").exists()


def test_source_naming_asyncio_is_built_on_its_loop(front):
    f = front(fmt="json")
    f.open(source=ASYNCIO_SOURCE, class_name="OnTheLoop",
           init_args={"args": [], "kwargs": {}})
    assert f.call_value("same_loop") is True


# Deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize("method,args", [
    ("sleep", (100,)), ("spin", ()), ("async_sleep", (100,)),
    ("async_spin", ()),
])
def test_deadline(w, method, args):
    t0 = time.monotonic()
    c = w.send_call(method, *args, timeout_ms=300)
    e = w.error(c, timeout=10)
    elapsed = time.monotonic() - t0
    assert e.timeout
    assert e.type == "TimeoutError"
    assert e.message == "call to %r exceeded its deadline of 0.3s" % method
    assert 0.25 < elapsed < 5
    # The worker goes on, and the deadline does not hit later calls.
    assert w.call_value("sleep", 0.5, timeout_ms=5000) == "slept"
    assert w.call_value("add", 1, 2) == 3


def test_deadline_on_pull(w):
    g = w.start_generator("slow_gen")
    w.pull(g, 2, timeout_ms=300)
    first, err = w.items(g, 2)
    assert first == "fast"
    assert err.kind == "error" and err.msg.timeout
    assert err.msg.type == "TimeoutError"


def test_deadline_on_async_generator_pull(w):
    g = w.start_generator("slow_agen")
    w.pull(g, 2, timeout_ms=300)
    first, err = w.items(g, 2)
    assert first == "fast"
    assert err.kind == "error" and err.msg.timeout
    assert err.msg.type == "TimeoutError"
    assert w.get("aclosed") is True


def test_deadline_not_hit(w):
    assert w.call_value("sleep", 0.1, timeout_ms=2000) == "slept"
    assert w.call_value("async_sleep", 0.1, timeout_ms=2000) == "slept"
    time.sleep(2.2)  # the old deadlines pass: nothing may fire now
    assert w.call_value("sleep", 0.3) == "slept"


def test_each_deadline_strikes_at_its_own_time_and_no_other(w):
    # An answered call's deadline strikes no later call, with a deadline
    # of its own or without one: a stray SIGALRM would interrupt it. The
    # timer is stopped when no call needs it, and set for the one running.
    assert w.call_value("add", 1, 2, timeout_ms=300) == 3
    assert w.call_value("itimer") == 0.0
    assert 4 < w.call_value("itimer", timeout_ms=5000) <= 5
    assert w.call_value("itimer") == 0.0
    t0 = time.monotonic()
    assert w.call_value("add", 1, 2, timeout_ms=300) == 3
    assert w.call_value("sleep", 0.8) == "slept"
    assert w.call_value("add", 1, 2, timeout_ms=300) == 3
    assert w.call_value("async_sleep", 0.8) == "slept"
    assert w.call_value("add", 1, 2, timeout_ms=300) == 3
    assert w.call_value("sleep", 0.8, timeout_ms=5000) == "slept"
    assert time.monotonic() - t0 >= 2.4
    # A later deadline strikes at its own time, not the earlier one's...
    assert w.call_value("add", 1, 2, timeout_ms=300) == 3
    t0 = time.monotonic()
    e = w.error(w.send_call("spin", timeout_ms=900), timeout=10)
    assert e.type == "TimeoutError" and e.timeout
    assert e.message == "call to 'spin' exceeded its deadline of 0.9s"
    assert 0.85 <= time.monotonic() - t0 < 3
    # ...and a sooner one at its own, not the later one's.
    assert w.call_value("add", 1, 2, timeout_ms=5000) == 3
    t0 = time.monotonic()
    e = w.error(w.send_call("spin", timeout_ms=300), timeout=10)
    assert e.type == "TimeoutError"
    assert 0.25 <= time.monotonic() - t0 < 3


# Output --------------------------------------------------------------------------------


def test_print_and_logging_arrive_as_output(w):
    assert w.call_value("talk") == "talked"
    # Output is sent before the result it belongs to.
    out = w.output_text(STDOUT)
    err = w.output_text(STDERR)
    assert "hello from print\n" in out
    assert "hello from a subprocess\n" in out
    assert "INFO:root:hello from logging\n" in err
    assert "raw stderr\n" in err
    assert "worker:" not in out + err  # the worker's log stays with the front


def test_what_a_call_printed_comes_before_its_answer(front):
    """The worker sends Flush before an answer while its pipes hold bytes,
    and reads none of them itself: a front that reads them only on Flush
    has all of it with the answer, and no Flush when nothing was written."""
    f = front(eager_output=False)
    f.open(Sample())
    for i in range(1, 6):
        assert f.call_value("flood", 1000) == 1000
        assert f.flushes == i
        assert sum(len(d) for s, d, _ in f.outputs if s == STDOUT) == 1000 * i
    assert f.call_value("add", 1, 2) == 3
    assert f.flushes == 5


def test_output_over_a_pipe_full_waits_for_the_front(w):
    """A call that writes more than a pipe holds goes on as the front
    reads."""
    assert w.call_value("flood", 300000) == 300000
    assert sum(len(d) for s, d, _ in w.outputs if s == STDOUT) == 300000


def test_the_worker_reads_none_of_its_output(w):
    """What a worker that dies wrote stays in the pipes for the front."""
    w.send_call("die_after_writing")
    w.drain(5)
    assert w.eof
    assert w.output_text(STDOUT).endswith("last words\n"), w.outputs


# Session failures -----------------------------------------------------------------------


def test_python_version_mismatch(front):
    f = front()
    with pytest.raises(Fatal) as ei:
        f.open(Sample(), python_version="3.12")
    assert ei.value.code == 9
    assert ei.value.message.startswith(
        "Python version mismatch: client 3.12, server %s" % workerlib.PY_VERSION)
    assert f.wait_exit() == 0


def test_cloudpickle_version_mismatch(front):
    f = front()
    with pytest.raises(Fatal) as ei:
        f.open(Sample(), cloudpickle_version="99.0.0")
    assert ei.value.code == 9
    assert "cloudpickle version mismatch: client 99.0.0" in ei.value.message
    assert f.wait_exit() == 0


def test_object_cannot_load(front):
    f = front()
    with pytest.raises(Fatal) as ei:
        f.open(data=b"crm_no_such_module\nThing\n.")
    assert ei.value.code == 9
    assert ei.value.message.startswith(
        "cannot load the object: ModuleNotFoundError: No module named "
        "'rm_no_such_module'")
    assert "pip_packages" in ei.value.message
    assert f.wait_exit() == 0


def test_object_over_the_limit(front):
    f = front(max_value_bytes=1024)
    with pytest.raises(Fatal) as ei:
        f.open(data=b"x" * 4096)
    assert ei.value.code == 8
    assert "max_value_bytes" in ei.value.message
    assert f.wait_exit() == 0


def test_sys_path_and_installed(front, tmp_path):
    env = tmp_path / "env"
    (env / "rmenvpkg-1.2.dist-info").mkdir(parents=True)
    (env / "rmenvpkg-1.2.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rmenvpkg\nVersion: 1.2\n")
    (env / "rmenvmod.py").write_text(
        "class Thing:\n    def hello(self):\n        return 'from env'\n")
    sys.path.insert(0, str(env))
    try:
        import rmenvmod
        data = pickle.dumps(rmenvmod.Thing())  # by reference
    finally:
        sys.path.remove(str(env))
        sys.modules.pop("rmenvmod", None)
    f = front(sys_path=[str(env)])
    ready = f.open(data=data)
    assert list(ready.installed) == ["rmenvpkg==1.2"]
    assert f.call_value("hello") == "from env"


def test_fork_children_drop_the_socket(w):
    assert w.call_value("forked") == 0


def test_wrong_parent_exits(front):
    f = front(parent_pid=1)
    assert f.wait_exit() == 1


def test_malformed_frame_exits(front):
    f = front()
    f.open(Sample())
    f.send_frame(workerlib.FRAME_MSG, b"\xff\xff\xff")
    assert f.wait_exit() == 1


# Session end ----------------------------------------------------------------------------


def test_eof_closes_generators_and_exits(front):
    f = front()
    f.open(Sample())
    g = f.start_generator("marker_gen")
    f.pull(g, 1)
    assert f.items(g, 1) == ["tick"]
    marker = f.session_dir / "finally.marker"
    assert not marker.exists()
    f.sock.close()
    f.sock = None
    assert f.wait_exit() == 0
    assert marker.read_text() == "closed\n"


def test_close_exits(front):
    f = front()
    f.open(Sample())
    g = f.start_generator("marker_gen")
    f.pull(g, 1)
    f.items(g, 1)
    pending = f.send_call("async_sleep", 100)
    f.close()
    assert f.wait_exit() == 0
    assert (f.session_dir / "finally.marker").exists()
    assert not f.inbox[pending]
