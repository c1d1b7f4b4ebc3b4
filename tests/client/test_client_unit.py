"""Unit tests of the remotemedia client that need no real server.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q tests/client (make client)

The first half tests pure parts (config, exceptions, encoding, chunking). The
second half drives the client's real gRPC stream handling against
``FakeServer``: a tiny in-process ``grpc.aio`` server that answers ``Open``
with ``Ready`` and plays scripted answers to calls. It is a test double for
the client's stream logic only; the integration tests use the real
``remotemediad``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import json
import logging
import os
import re
import pickle
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import cloudpickle
import grpc
import pytest

from clientlib import runner
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.core import exceptions as rx
from remotemedia.core.exceptions import (
    AuthenticationError,
    ConnectionLostError,
    InstallError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    SessionClosedError,
    WorkerDiedError,
)
from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient, wire
from remotemedia.remote.errors import exception_from_error, exception_from_status
from remotemedia.remote.proxy import RemoteProxy

MiB = 1 << 20


def _on_the_wire(messages: Any) -> List[Any]:
    """The ClientMessages as the server reads them: encoded ones decoded."""
    return [pb.ClientMessage.FromString(wire.serialize(m)) for m in messages]
TEST_TIMEOUT = 20.0  # every async test is bounded by this


class MyError(Exception):
    """A user exception class of the client's own code."""


class Calculator:
    """The object hosted in the fake sessions."""

    def __init__(self) -> None:
        self.value = 42

    def add(self, a: int, b: int) -> int:
        return a + b


run = runner(TEST_TIMEOUT)


# ---------------------------------------------------------------------------
# Config and import paths

def test_config_fields_and_defaults() -> None:
    fields = [(f.name, f.default) for f in dataclasses.fields(RemoteExecutorConfig)]
    assert fields == [
        ("host", "localhost"), ("port", 50052), ("protocol", "grpc"), ("auth_token", None),
        ("timeout", 30.0), ("max_retries", 3), ("ssl_enabled", False), ("pip_packages", None),
        ("ca_file", None), ("client_cert_file", None), ("client_key_file", None),
    ]
    cfg = RemoteExecutorConfig("example.org", 1234, "grpc", "tok", 5, 0, False, ["numpy"])
    assert cfg.target == "example.org:1234"
    assert cfg.timeout == 5.0 and isinstance(cfg.timeout, float)
    assert "tok" not in repr(cfg)
    assert RemoteExecutorConfig(host="::1").target == "[::1]:50052"


@pytest.mark.parametrize("kwargs, error", [
    ({"protocol": "http"}, ValueError),
    ({"timeout": 0}, ValueError),
    ({"timeout": -1.5}, ValueError),
    ({"timeout": "30"}, TypeError),
    ({"max_retries": -1}, ValueError),
    ({"max_retries": 1.5}, TypeError),
    ({"pip_packages": "numpy"}, TypeError),
    ({"pip_packages": ["numpy", 3]}, TypeError),
    ({"port": 0}, ValueError),
    ({"host": ""}, ValueError),
    ({"ssl_enabled": True, "client_cert_file": "c.pem"}, ValueError),
    ({"ca_file": "ca.pem"}, ValueError),
    ({"timeout": float("inf")}, ValueError),
    ({"timeout": 1e17}, ValueError),
    ({"auth_token": "tok\nen"}, ValueError),
    ({"auth_token": "t\u00f6ken"}, ValueError),
    ({"auth_token": "t" * 1025}, ValueError),
    ({"auth_token": b"token"}, TypeError),
    ({"pip_packages": ["numpy\ud800"]}, ValueError),
    ({"ssl_enabled": "false"}, TypeError),  # a true string: TLS on by mistake
    ({"ssl_enabled": 1}, TypeError),
])
def test_config_validation(kwargs: Dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        RemoteExecutorConfig(**kwargs)


def test_config_accepts_valid_values() -> None:
    cfg = RemoteExecutorConfig(pip_packages=("numpy>=1.21", "qrcode[pil]"), max_retries=0,
                               ssl_enabled=True, ca_file="ca.pem")
    assert cfg.pip_packages == ["numpy>=1.21", "qrcode[pil]"]
    cfg = RemoteExecutorConfig(auth_token="A-z 0~9" + "t" * 1017, timeout=1e9,
                               pip_packages=["caf\u00e9>=1"])
    assert cfg.timeout == 1e9


def test_config_errors_never_quote_the_token() -> None:
    secret = "s3cret-s3cret-s3cret"
    for token in (secret + "\n", secret * 60):
        with pytest.raises(ValueError) as info:
            RemoteExecutorConfig(auth_token=token)
        assert "s3cret" not in str(info.value)


def test_tls_files_that_are_not_pem_are_named(tmp_path: Path) -> None:
    """A ca_file, or a client certificate and key, that gRPC would refuse
    with only "empty address list" after its retries: a ValueError that
    names the file, at connect()."""
    junk = tmp_path / "passwd"
    junk.write_text("root:x:0:0:root:/root:/bin/bash\n")

    async def connect(**files: Any) -> None:
        cfg = RemoteExecutorConfig(port=9, ssl_enabled=True, timeout=1.0, **files)
        client = RemoteProxyClient(cfg)
        await client.connect()
        await client.disconnect()

    with pytest.raises(ValueError, match=re.escape(f"ca_file '{junk}' holds no PEM certificate")):
        asyncio.run(connect(ca_file=junk))
    with pytest.raises(ValueError, match=re.escape(f"client_cert_file '{junk}' and client_key_file")):
        asyncio.run(connect(client_cert_file=junk, client_key_file=junk))
    with pytest.raises(OSError):
        asyncio.run(connect(ca_file=tmp_path / "missing.pem"))
    # A 1024-bit RSA key: OpenSSL's default security level refuses it,
    # gRPC's BoringSSL takes it, so the check must too.
    key, crt = tmp_path / "weak.key", tmp_path / "weak.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "1",
                    "-subj", "/CN=weak", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    asyncio.run(connect(ca_file=crt, client_cert_file=crt, client_key_file=key))


def test_import_paths() -> None:
    import remotemedia
    import remotemedia.core.exceptions as core_exc
    import remotemedia.remote as remote

    assert isinstance(remotemedia.__version__, str)
    assert remotemedia.RemoteProxyClient is remote.RemoteProxyClient
    assert remotemedia.RemoteExecutorConfig is RemoteExecutorConfig
    # core_exc.__all__ is the one list of the exception names: all of them.
    assert set(core_exc.__all__) == {name for name, value in vars(core_exc).items()
                                     if isinstance(value, type)
                                     and issubclass(value, RemoteMediaError)}
    for name in core_exc.__all__:
        assert getattr(remote, name) is getattr(core_exc, name)
        assert getattr(remotemedia, name) is getattr(core_exc, name)
        assert name in remote.__all__ and name in remotemedia.__all__
    assert issubclass(RemoteExecutionError, RemoteMediaError)
    for cls in (InstallError, AuthenticationError, RemoteTimeoutError, WorkerDiedError,
                ConnectionLostError, SessionClosedError):
        assert issubclass(cls, RemoteExecutionError)
    assert issubclass(RemoteTimeoutError, TimeoutError)


def test_import_remotemedia_does_not_load_grpc() -> None:
    code = ("import sys, remotemedia, remotemedia.core.node, remotemedia.core.exceptions;"
            "print('grpc' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..", "python"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# Exceptions from Error messages and statuses

def make_error(module: str, qualname: str, message: str = "boom", **kw: Any) -> Any:
    kw.setdefault("type", qualname if module == "builtins" else f"{module}.{qualname}")
    kw.setdefault("traceback", f"Traceback (most recent call last):\n  ...\n{qualname}: {message}\n")
    return pb.Error(call_id=1, module=module, qualname=qualname, message=message, **kw)


def test_builtin_exception_is_catchable() -> None:
    exc = exception_from_error(make_error("builtins", "ValueError", "bad value"), pb.FORMAT_PICKLE)
    assert isinstance(exc, ValueError) and isinstance(exc, RemoteExecutionError)
    assert str(exc) == "bad value"
    assert exc.args == ("bad value",)
    assert exc.remote_type == "ValueError"
    assert "ValueError: bad value" in exc.remote_traceback
    assert exc.code is None
    assert any("Remote traceback" in note for note in exc.__notes__)
    with pytest.raises(ValueError, match="bad value"):
        raise exc
    again = exception_from_error(make_error("builtins", "ValueError"), pb.FORMAT_PICKLE)
    assert type(again) is type(exc)  # the dynamic class is cached
    assert repr(exc) == "ValueError('bad value')"


def test_client_module_exception_is_catchable() -> None:
    exc = exception_from_error(make_error(__name__, "MyError", "mine"), pb.FORMAT_JSON)
    assert isinstance(exc, MyError) and isinstance(exc, RemoteExecutionError)
    assert str(exc) == "mine"
    with pytest.raises(MyError):
        raise exc


def test_main_module_exception_is_catchable() -> None:
    main = sys.modules["__main__"]

    class ScriptError(Exception):
        pass

    ScriptError.__module__ = "__main__"
    ScriptError.__qualname__ = "ScriptError"
    setattr(main, "ScriptError", ScriptError)
    try:
        exc = exception_from_error(make_error("__main__", "ScriptError", "from script"),
                                   pb.FORMAT_PICKLE)
        assert isinstance(exc, ScriptError)
        assert str(exc) == "from script"
    finally:
        delattr(main, "ScriptError")


def test_unknown_module_is_never_imported(tmp_path: Any) -> None:
    marker = tmp_path / "imported"
    name = "remotemedia_test_evil_module"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Err(Exception):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        # A pickle that names the module: GLOBAL, empty tuple, REDUCE.
        pickled = f"c{name}\nErr\n(tR.".encode()
        before = set(sys.modules)
        err = make_error(name, "Err", "remote only", pickled=pickled)
        exc = exception_from_error(err, pb.FORMAT_PICKLE)
        assert type(exc) is RemoteExecutionError
        assert str(exc) == "remote only"
        assert exc.remote_type == f"{name}.Err"
        assert name not in sys.modules
        assert set(sys.modules) == before
        assert not marker.exists()
    finally:
        sys.path.remove(str(tmp_path))


def test_non_exception_and_flow_control_types_are_not_combined() -> None:
    for module, qualname in (("builtins", "StopIteration"), ("builtins", "KeyboardInterrupt"),
                             ("asyncio.exceptions", "CancelledError"), ("builtins", "len"),
                             ("os", "path")):
        exc = exception_from_error(make_error(module, qualname), pb.FORMAT_PICKLE)
        assert type(exc) is RemoteExecutionError, qualname


class _Uncombinable(Exception):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("final class")


class _BadNew(Exception):
    def __new__(cls, *args: Any) -> Any:
        raise RuntimeError("no")


class _Registered(Exception):
    """Error classes that register a unique code: a subclass that reuses
    its parent's is refused, with ValueError (not TypeError)."""
    code = 404
    codes: set = {404}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.code in _Registered.codes:
            raise ValueError(f"code {cls.code} is already used")


class _ExitsOnSubclass(Exception):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise SystemExit("from __init_subclass__")


def test_uncombinable_types_fall_back() -> None:
    for qualname in ("_Uncombinable", "_BadNew", "_Registered", "_ExitsOnSubclass"):
        exc = exception_from_error(make_error(__name__, qualname, "x"), pb.FORMAT_PICKLE)
        assert type(exc) is RemoteExecutionError
        assert str(exc) == "x" and exc.remote_type == f"{__name__}.{qualname}"
        assert any("Remote traceback" in note for note in exc.__notes__)


class _FailsOnce(Exception):
    failures = [RecursionError("deep")]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if _FailsOnce.failures:
            raise _FailsOnce.failures.pop()


def test_a_class_that_failed_for_want_of_memory_or_stack_is_tried_again() -> None:
    """RecursionError and MemoryError are no answer of the class's: the
    fallback is not remembered for it."""
    first = exception_from_error(make_error(__name__, "_FailsOnce", "x"), pb.FORMAT_PICKLE)
    assert type(first) is RemoteExecutionError
    again = exception_from_error(make_error(__name__, "_FailsOnce", "x"), pb.FORMAT_PICKLE)
    assert isinstance(again, _FailsOnce) and isinstance(again, RemoteExecutionError)


class _ExitsWhenLoaded:
    def __reduce__(self) -> Any:
        return (exec, ("raise SystemExit(3)",))


def test_a_pickled_exception_that_exits_when_loaded_is_left_out() -> None:
    """What the server pickled runs when loaded: a SystemExit there must
    not end the client. The exception is built without its state."""
    err = make_error("builtins", "ValueError", "v", pickled=pickle.dumps(_ExitsWhenLoaded()))
    exc = exception_from_error(err, pb.FORMAT_PICKLE)
    assert isinstance(exc, ValueError) and isinstance(exc, RemoteExecutionError)
    assert str(exc) == "v"


class _WithState(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status)
        self.status = status


def test_pickled_state_is_restored() -> None:
    err = make_error("builtins", "KeyError", "'k'", pickled=pickle.dumps(KeyError("k")))
    exc = exception_from_error(err, pb.FORMAT_PICKLE)
    assert isinstance(exc, KeyError) and exc.args == ("k",) and str(exc) == "'k'"
    err = make_error(__name__, "_WithState", "teapot",
                     pickled=pickle.dumps(_WithState("teapot", 418)))
    exc = exception_from_error(err, pb.FORMAT_PICKLE)
    assert isinstance(exc, _WithState) and exc.status == 418 and exc.code is None
    # json never unpickles what the server sent
    exc = exception_from_error(err, pb.FORMAT_JSON)
    assert not hasattr(exc, "status")
    # garbage is ignored
    err = make_error("builtins", "ValueError", "v", pickled=b"\x80\x05garbage")
    assert isinstance(exception_from_error(err, pb.FORMAT_PICKLE), ValueError)


def test_timeout_flag_gives_remote_timeout_error() -> None:
    err = make_error("builtins", "TimeoutError", "deadline passed", timeout=True)
    exc = exception_from_error(err, pb.FORMAT_PICKLE)
    assert isinstance(exc, RemoteTimeoutError) and isinstance(exc, TimeoutError)
    assert str(exc) == "deadline passed"


def test_combined_exception_pickles() -> None:
    exc = exception_from_error(make_error("builtins", "ValueError", "v"), pb.FORMAT_PICKLE)
    again = pickle.loads(pickle.dumps(exc))
    assert isinstance(again, ValueError) and isinstance(again, RemoteExecutionError)
    assert str(again) == "v"


@pytest.mark.parametrize("code, details, cls", [
    (grpc.StatusCode.ABORTED, "worker killed by signal 9 (Killed)", WorkerDiedError),
    (grpc.StatusCode.FAILED_PRECONDITION,
     "Failed to install x: no matching distribution; pip's output ends with:\n...",
     InstallError),
    (grpc.StatusCode.FAILED_PRECONDITION,
     "Failed to install the requirements: cannot start the environment builder",
     InstallError),
    # An object that fails to load may say anything about installing.
    (grpc.StatusCode.FAILED_PRECONDITION,
     "cannot load the object: RuntimeError: registry error: run `plugin install` first",
     RemoteExecutionError),
    (grpc.StatusCode.FAILED_PRECONDITION, "client Python 3.10 differs from server's 3.11",
     RemoteExecutionError),
    (grpc.StatusCode.UNAUTHENTICATED, "bad token", AuthenticationError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "call ignored its deadline", RemoteTimeoutError),
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", ConnectionLostError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "memory limit 512 MiB reached", RemoteExecutionError),
    (grpc.StatusCode.OK, "", SessionClosedError),
])
def test_status_mapping(code: grpc.StatusCode, details: str, cls: type) -> None:
    exc = exception_from_status(code, details, "h:1")
    assert type(exc) is cls
    assert exc.code == code
    assert details in str(exc)
    if cls in (WorkerDiedError, InstallError, AuthenticationError):
        assert str(exc) == details


def test_exception_subclasses_exist():
    assert issubclass(rx.RemoteExecutionError, rx.RemoteMediaError)
    for name in ("InstallError", "AuthenticationError", "RemoteTimeoutError", "WorkerDiedError"):
        assert issubclass(getattr(rx, name), rx.RemoteMediaError), name
    assert issubclass(rx.RemoteTimeoutError, TimeoutError)


# ---------------------------------------------------------------------------
# Encoding and chunking

def test_json_args_that_json_cannot_carry() -> None:
    assert json.loads(wire.encode_args(pb.FORMAT_JSON, (1, "é"), {"b": [2]})) == {
        "args": [1, "é"], "kwargs": {"b": [2]}}
    with pytest.raises(TypeError, match="set"):
        wire.encode_args(pb.FORMAT_JSON, ({1, 2},), {})
    with pytest.raises(TypeError, match="bytes"):
        wire.encode_args(pb.FORMAT_JSON, (), {"data": b"x"})
    # A lone surrogate (os.fsdecode of a name that is not UTF-8) is not UTF-8.
    with pytest.raises(TypeError, match="surrogates not allowed"):
        wire.encode_args(pb.FORMAT_JSON, ("a\udcff",), {})


def test_pickle_args_document() -> None:
    doc = wire.encode_args(pb.FORMAT_PICKLE, (1, [2]), {"b": 3})
    assert pickle.loads(doc) == ((1, [2]), {"b": 3})


class _Str(str):
    pass


def test_plain_arguments_pickle_as_cloudpickle_would(monkeypatch: Any) -> None:
    """Arguments of exactly the plain types skip cloudpickle, byte for byte
    the same; anything else, subclasses (of str as a keyword's name too),
    and bytes large enough to go out of band, still take cloudpickle's way."""
    fast: List[Any] = []
    real_dumps = pickle.dumps

    def spy(obj: Any, *a: Any, **kw: Any) -> bytes:
        fast.append(obj)
        return real_dumps(obj, *a, **kw)

    monkeypatch.setattr(wire.pickle, "dumps", spy)
    small = b"s" * (wire._oob.OOB_MIN - 1)
    plain = [((), {}), ((1, -2**70, 0.5, float("nan"), True, None), {}),
             (("é\udcff", b"xy" * 100, small), {"k": "v", "n": None})]
    for args, kwargs in plain:
        del fast[:]
        doc = wire.encode_args(pb.FORMAT_PICKLE, args, kwargs)
        assert fast == [(args, kwargs)]
        assert doc == cloudpickle.dumps((args, kwargs), protocol=5)

    class Local(str):  # only cloudpickle can send it (by value)
        pass

    not_plain = [((Local("s"),), {}), ((_Str("s"),), {}), (([1],), {}),
                 ((lambda x: x + 1,), {}), ((), {Local("name"): 1}),
                 ((b"z" * wire._oob.OOB_MIN,), {})]
    for args, kwargs in not_plain:
        del fast[:]
        doc = wire.encode_args(pb.FORMAT_PICKLE, args, kwargs)
        assert fast == []
        if not isinstance(doc, wire.Encoded):
            assert doc == cloudpickle.dumps((args, kwargs), protocol=5)
    got = pickle.loads(wire.encode_args(pb.FORMAT_PICKLE, (), {Local("name"): 1}))
    assert got == ((), {"name": 1}) and type(next(iter(got[1]))).__name__ == "Local"
    big = wire.encode_args(pb.FORMAT_PICKLE, (b"z" * wire._oob.OOB_MIN,), {})
    assert [b.nbytes for b in big.buffers] == [wire._oob.OOB_MIN]


def test_args_are_chunked_under_one_mib() -> None:
    doc = os.urandom(3 * MiB + MiB // 2)
    messages = _on_the_wire(wire.call_messages(7, "process", pb.CALL_METHOD, doc, 30000))
    assert len(messages) == 4
    assert messages[0].WhichOneof("msg") == "call"
    call = messages[0].call
    assert (call.call_id, call.name, call.timeout_ms) == (7, "process", 30000)
    chunks = [call.args] + [m.value for m in messages[1:]]
    assert all(m.WhichOneof("msg") == "value" for m in messages[1:])
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.more for c in chunks] == [True, True, True, False]
    assert all(c.call_id == 7 for c in chunks)
    assert chunks[0].total_size == len(doc)
    assert all(len(c.data) <= MiB for c in chunks)
    assert all(m.ByteSize() <= MiB + 64 for m in messages)
    assert b"".join(c.data for c in chunks) == doc


def test_arg_chunks_are_made_as_the_writer_takes_them(monkeypatch: Any) -> None:
    """A large argument's chunk messages are made one by one as they are
    written, not all at the call: a few MiB at a time, rather than a second
    copy of the whole value made, and given back, at every call."""
    made: List[int] = []
    encode = wire._value_message

    def counting(call_id: int, seq: int, more: bool, data: Any) -> bytes:
        made.append(seq)
        return encode(call_id, seq, more, data)

    monkeypatch.setattr(wire, "_value_message", counting)
    doc = os.urandom(4 * MiB)
    messages = iter(wire.call_messages(7, "process", pb.CALL_METHOD, doc, 30000))
    assert made == []  # chunk 0 rides in the Call
    assert next(messages).WhichOneof("msg") == "call"
    assert _on_the_wire([next(messages)])[0].value.seq == 1
    assert made == [1]
    rest = [m.value for m in _on_the_wire(messages)]
    assert made == [1, 2, 3] and [c.seq for c in rest] == [2, 3]


@pytest.mark.parametrize("call_id", [0, 1, 127, 128, 300, 1 << 63])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, MiB])
def test_an_encoded_chunk_is_what_protobuf_writes(call_id: int, size: int) -> None:
    """Continuation chunks are encoded by hand, with one copy of their data:
    the bytes are protobuf's own, for every width of each varint."""
    data = os.urandom(size)
    for seq, more in [(0, False), (1, True), (127, False), (128, True), (1 << 20, False)]:
        want = pb.ClientMessage(value=pb.Value(call_id=call_id, seq=seq, more=more,
                                               data=data)).SerializeToString()
        assert wire._value_message(call_id, seq, more, memoryview(data)) == want


def test_only_encoded_messages_pass_the_serializer_untouched() -> None:
    message = wire.close_message()
    assert wire.serialize(message) == message.SerializeToString()
    raw = message.SerializeToString()
    assert wire.serialize(raw) is raw


def test_a_writable_argument_is_sent_as_it_was_at_the_call() -> None:
    """Chunks made after the call still carry the value of the call's
    moment: a bytearray or an array changed meanwhile is not sent torn."""
    import numpy as np
    buf = bytearray(os.urandom(3 * MiB))
    arr = np.arange(MiB, dtype=np.uint16)
    before = (bytes(buf), arr.copy())
    enc = wire.encode_args(pb.FORMAT_PICKLE, (buf, arr), {})
    messages = iter(wire.call_messages(9, "process", pb.CALL_METHOD, enc, 30000))
    first = next(messages)
    buf[:] = bytes(len(buf))
    arr[:] = 7
    chunks = [first.call.args] + [m.value for m in _on_the_wire(messages)]
    data = bytearray(b"".join(c.data for c in chunks))
    sent = wire.decode_value(pb.FORMAT_PICKLE,
                             wire.Buffered(data, list(chunks[0].buffer_sizes)))
    assert bytes(sent[0][0]) == before[0]
    assert (sent[0][1] == before[1]).all()


@pytest.mark.parametrize("sizes", [
    [100, 150],       # smaller than the buffers sent: would cut the last
    [100, 100, 100],  # one more than the pickle uses
    [200],            # one fewer than the pickle uses
    [100, 101],       # larger: the pickle is cut short
    [1 << 40],        # larger than the value
])
def test_a_result_whose_buffer_sizes_lie_is_a_protocol_error(sizes: List[int]) -> None:
    """A value whose buffer_sizes do not fit its pickle is refused with
    ProtocolError, never decoded with a buffer cut short."""
    buffers: List[Any] = []
    doc = pickle.dumps([pickle.PickleBuffer(bytearray(b"a" * 100)),
                        pickle.PickleBuffer(bytearray(b"b" * 200))],
                       protocol=5, buffer_callback=buffers.append)
    data = bytearray(doc) + b"".join(b.raw() for b in buffers)
    got = wire.decode_value(pb.FORMAT_PICKLE, wire.Buffered(bytearray(data), [100, 200]))
    assert [bytes(b) for b in got] == [b"a" * 100, b"b" * 200]
    with pytest.raises(wire.ProtocolError, match="malformed value"):
        wire.decode_value(pb.FORMAT_PICKLE, wire.Buffered(bytearray(data), sizes))


def test_large_values_use_buffers_on_the_wire():
    """The client's encoding: the arrays and large bytes after the pickle."""
    import numpy as np
    a = np.zeros(1 << 20, dtype=np.uint8)
    enc = wire.encode_args(pb.FORMAT_PICKLE, (a, b"x" * 70_000, b"y"), {})
    assert isinstance(enc, wire.Encoded)
    chunks = list(wire.iter_chunks(3, enc))
    assert list(chunks[0].buffer_sizes) == [1 << 20, 70_000]
    assert chunks[0].total_size == len(enc) == sum(len(c.data) for c in chunks)
    assert all(len(c.data) <= wire.CHUNK_SIZE for c in chunks)
    assert [c.more for c in chunks] == [True] * (len(chunks) - 1) + [False]
    small = wire.encode_args(pb.FORMAT_PICKLE, (1, b"y"), {})
    assert isinstance(small, bytes)


def test_python_version_tolerates_a_plain_tuple(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 99, 0, "final", 0))
    assert wire.python_version() == "3.99"
    (message,) = _on_the_wire(wire.open_messages(b"x", pb.FORMAT_PICKLE, []))
    assert message.open.python_version == "3.99"


def test_open_is_chunked() -> None:
    payload = os.urandom(2 * MiB + 5)
    messages = _on_the_wire(wire.open_messages(payload, pb.FORMAT_JSON, ["numpy"]))
    op = messages[0].open
    assert op.protocol == pb.PROTOCOL_V1 and op.format == pb.FORMAT_JSON
    assert list(op.requirements) == ["numpy"]
    assert op.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert op.cloudpickle_version == cloudpickle.__version__
    assert op.object.call_id == 0 and op.object.more
    rest = [m.value for m in messages[1:]]
    assert [v.seq for v in rest] == [1, 2] and all(v.call_id == 0 for v in rest)
    assert op.object.data + b"".join(v.data for v in rest) == payload
    assert all(m.ByteSize() <= MiB + 256 for m in messages)


def _open_by_protobuf(payload: Any, fmt: int, requirements: List[str],
                      chunk_size: int) -> List[bytes]:
    """The messages of an open as protobuf writes them: its chunks as
    iter_chunks makes them (protobuf Values), each message serialized by
    protobuf."""
    first, *rest = wire.iter_chunks(0, payload, chunk_size)
    op = pb.Open(protocol=pb.PROTOCOL_V1, format=fmt, requirements=requirements,
                 python_version=wire.python_version(),
                 cloudpickle_version=cloudpickle.__version__)
    op.object.CopyFrom(first)
    return [pb.ClientMessage(open=op).SerializeToString()] + [
        pb.ClientMessage(value=chunk).SerializeToString() for chunk in rest]


def test_what_protobuf_would_refuse_is_refused() -> None:
    """What the config's checks passed but was changed since (a number out
    of uint64's range, a requirement that is not text) raises, as
    protobuf's encoding did, rather than going out garbled."""
    with pytest.raises(ValueError, match="out of range"):
        wire.call_messages(1, "f", pb.CALL_METHOD, b"x", 1 << 64)
    with pytest.raises(ValueError, match="out of range"):
        wire.call_messages(-1, "f", pb.CALL_METHOD, b"x", 1000)
    with pytest.raises(TypeError, match="only strings, found bytes"):
        list(wire.open_messages(b"x", pb.FORMAT_PICKLE, ["numpy", b"scipy"]))  # type: ignore


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16384, 70_000, 3 * 16384 + 5])
def test_an_encoded_open_is_what_protobuf_writes(size: int) -> None:
    """An open is encoded by hand: the bytes are protobuf's own, for each
    width of each varint, one chunk or several, the requirements of any
    UTF-8 (an empty one included), either format, and an object with
    out-of-band buffers."""
    payloads = [os.urandom(size),
                wire.dump_object([bytes(size + wire._oob.OOB_MIN), bytearray(b"z" * 70_000)])]
    assert isinstance(payloads[1], wire.Encoded)
    for payload in payloads:
        for fmt, requirements in [(pb.FORMAT_PICKLE, []), (pb.FORMAT_JSON, ["numpy"]),
                                  (pb.FORMAT_PICKLE, ["", "pkg-é>=1.0", "x" * 300])]:
            for chunk_size in (wire.CHUNK_SIZE, 16384):
                got = [wire.serialize(m) for m in wire.open_messages(
                    payload, fmt, requirements, chunk_size)]
                assert got == _open_by_protobuf(payload, fmt, requirements, chunk_size)


def test_a_varint_is_what_protobuf_writes() -> None:
    """The varints of the encoders by hand, at each width's edges; a
    negative number is refused, as by the loop of the widest."""
    from google.protobuf.internal import encoder
    for n in [0, 1, 127, 128, 255, 300, 16383, 16384, (1 << 21) - 1, 1 << 21, 1 << 63,
              (1 << 64) - 1]:
        assert wire._varint(n) == encoder._VarintBytes(n), n
    for n in (-1, -128, -16384):
        with pytest.raises(ValueError):
            wire._varint(n)


def test_get_call_has_no_args() -> None:
    (message,) = _on_the_wire(wire.call_messages(3, "value", pb.CALL_GET, None, 1000))
    assert message.call.kind == pb.CALL_GET and not message.call.HasField("args")


@pytest.mark.parametrize("call_id", [0, 1, 127, 128, 1 << 63])
@pytest.mark.parametrize("doc_size", [None, 0, 1, 127, 128, 16384])
def test_an_encoded_call_is_what_protobuf_writes(call_id: int, doc_size: Optional[int]) -> None:
    """A call whose arguments fit one chunk is encoded by hand: the bytes
    are protobuf's own, for every width of each varint, every kind, and
    names of any UTF-8."""
    doc = None if doc_size is None else os.urandom(doc_size)
    for name, kind, timeout_ms in [("ping", pb.CALL_METHOD, 60000), ("", pb.CALL_GET, 0),
                                   ("é名", pb.CALL_METHOD, 1), ("x" * 200, pb.CALL_GET, 1 << 40)]:
        want = pb.ClientMessage(call=pb.Call(call_id=call_id, name=name, kind=kind,
                                             timeout_ms=timeout_ms))
        if doc is not None:
            want.call.args.call_id = call_id
            want.call.args.data = doc
            want.call.args.total_size = len(doc)
        (got,) = wire.call_messages(call_id, name, kind, doc, timeout_ms)
        assert wire.serialize(got) == want.SerializeToString()


def _as_parsed(buf: bytes) -> Any:
    """parse_server_message(buf) in protobuf's terms: a ServerMessage, or
    the exception it raised."""
    try:
        got = wire.parse_server_message(buf)
    except Exception as exc:  # compared with protobuf's own
        return type(exc)
    if type(got) is wire.Continuation:
        assert type(got.data) is memoryview  # a view, not a copy
        return pb.ServerMessage(value=pb.Value(call_id=got.call_id, seq=got.seq,
                                               more=got.more, data=bytes(got.data)))
    return got


def _protobuf_parsed(buf: bytes) -> Any:
    try:
        return pb.ServerMessage.FromString(buf)
    except Exception as exc:
        return type(exc)


def test_a_large_chunk_is_read_as_protobuf_reads_it() -> None:
    """parse_server_message reads plain continuation chunks by hand, and
    must agree with protobuf on every input: fields in any order or
    repeated, unknown fields, keys and lengths padded to longer varints,
    oversized varints, cut short, or garbage."""
    import random
    rng = random.Random(1234)
    data = os.urandom(1 << 17)

    def varint(n: int) -> bytes:
        """Mostly the shortest varint (test_an_encoded_chunk_is_what_protobuf_writes
        checks wire._varint); now and then padded, up to 10 bytes."""
        short = wire._varint(n)
        if rng.random() >= 0.08 or len(short) == 10:
            return short
        width = rng.randrange(len(short) + 1, 11)
        return bytes(b | 0x80 for b in short) + b"\x80" * (width - len(short) - 1) + b"\x00"

    def field(plain: bool) -> bytes:
        kind = rng.choice([0, 1, 2, 7]) if plain else rng.randrange(9)
        if kind == 0:
            return varint(0x08) + varint(rng.choice([0, 1, 300, (1 << 64) - 1]))
        if kind == 1:
            return varint(0x10) + varint(rng.choice([1, 127, (1 << 32) - 1, 1 << 32]))
        if kind == 2:
            return varint(0x18) + varint(rng.choice([0, 1, 2]))
        if kind == 3:
            return varint(0x28) + varint(5)  # total_size: not a plain chunk
        if kind == 4:
            return b"\x3a\x01\x05"  # buffer_sizes
        if kind == 5:
            return b"\x78\x01"  # an unknown field
        if kind == 6:  # varints of 11 bytes, and of 10 over 64 bits
            return b"\x08" + rng.choice([b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x7f"])
        n = rng.choice([0, 1, 70000, 1 << 17])
        return varint(0x22) + varint(n) + data[:n]

    seen = {"fast": 0, "protobuf": 0, "error": 0}
    for _ in range(1000):
        plain = rng.random() < 0.5  # only the fields of a plain chunk
        inner = b"".join(field(plain) for _ in range(rng.randrange(1, 6)))
        inner += varint(0x22) + varint(1 << 16) + data[:1 << 16]  # large enough
        if rng.random() < 0.1:  # data longer than the Value holds
            inner += b"\x22" + varint(1 << 16) + data[:(1 << 16) - rng.randrange(1, 9)]
        # Mostly a value; or a Result, an Item or an End of the same bytes.
        tag = rng.choice([b"\x42"] * 7 + [b"\x1a", b"\x32", b"\x3a"])
        buf = tag + varint(len(inner)) + inner
        cut = rng.random()
        if cut < 0.2:
            buf = buf[:rng.randrange(len(buf))]
        elif cut < 0.3:  # after the Value: another field of ServerMessage
            buf += rng.choice([b"\x42\x00", b"\x3a\x00", b"\x00", b"\x42",
                               b"\x10\x07", b"\x08\x05"])
        elif cut < 0.35:
            buf = bytes(b ^ 0xFF if rng.random() < 0.01 else b for b in buf)
        with warnings.catch_warnings():  # protobuf warns of some garbage
            warnings.simplefilter("ignore", RuntimeWarning)
            got, want = _as_parsed(buf), _protobuf_parsed(buf)
            if isinstance(want, type):
                assert isinstance(got, type) and issubclass(got, Exception), buf[:16]
                seen["error"] += 1
                continue
            assert got == want, buf[:32]
            kind = type(wire.parse_server_message(buf))
        seen["fast" if kind is wire.Continuation else "protobuf"] += 1
    # Each path was taken, the hand parser's often.
    assert seen["fast"] >= 100 and seen["protobuf"] and seen["error"], seen


def test_a_large_result_is_joined_from_views_of_its_chunks() -> None:
    data = os.urandom(3 * MiB + 70000)
    chunks = list(wire.iter_chunks(4, data))
    asm = wire.ValueAssembler()
    assert asm.start(4, chunks[0], "result") is None
    parsed = [wire.parse_server_message(pb.ServerMessage(value=c).SerializeToString())
              for c in chunks[1:]]
    assert all(type(p) is wire.Continuation for p in parsed)
    assert asm.feed(parsed[0]) is None and asm.feed(parsed[1]) is None
    assert asm.feed(parsed[2]) == ("result", data)
    small = pb.ServerMessage(value=pb.Value(call_id=1, seq=1, data=b"x")).SerializeToString()
    assert type(wire.parse_server_message(small)) is pb.ServerMessage


def test_reassembly() -> None:
    data = os.urandom(2 * MiB + 17)
    chunks = list(wire.iter_chunks(5, data))
    asm = wire.ValueAssembler()
    assert asm.start(5, chunks[0], "result") is None
    assert asm.feed(chunks[1]) is None
    assert asm.feed(chunks[2]) == ("result", data)
    assert len(asm) == 0
    # single chunk
    (only,) = wire.iter_chunks(6, b"small")
    assert asm.start(6, only, ("item", 0)) == (("item", 0), b"small")
    # out of order
    asm.start(5, chunks[0], "result")
    with pytest.raises(wire.ProtocolError):
        asm.feed(chunks[2])
    with pytest.raises(KeyError):
        asm.feed(chunks[1])  # value was dropped after the error
    # empty value
    (empty,) = wire.iter_chunks(8, b"")
    assert asm.start(8, empty, "result") == ("result", b"")


def test_user_modules_are_registered_by_value(tmp_path: Any) -> None:
    name = "remotemedia_test_user_mod"
    (tmp_path / f"{name}.py").write_text("class Base:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = __import__(name)

        class Child(mod.Base):
            pass

        Child.__module__ = "json"  # stdlib: never by value
        added = wire.register_user_modules(Child())
        assert name in added
        assert name in cloudpickle.list_registry_pickle_by_value()
        assert "json" not in cloudpickle.list_registry_pickle_by_value()
        assert not wire.is_user_module(sys.modules["remotemedia.remote.wire"])
        assert not wire.is_user_module(sys.modules["grpc"])
        assert not wire.is_user_module(sys.modules["__main__"])
        cloudpickle.unregister_pickle_by_value(mod)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_odd_sys_modules_entries_do_not_stop_the_registration(tmp_path: Any) -> None:
    """sys.modules may hold a non-module (a lazy loader), or a module under
    another key than its name (loaded from a file): cloudpickle refuses
    both, and they go by reference; the user modules beside them are
    still registered, then and later."""
    import importlib.util
    (tmp_path / "rm_plugin_src_q.py").write_text("X = 1\n")
    (tmp_path / "rm_helper_q.py").write_text("def f(x):\n    return x\n")
    sys.path.insert(0, str(tmp_path))

    class Lazy:
        __name__ = "rm_lazy_q"
        __file__ = str(tmp_path / "rm_lazy_q.py")

    spec = importlib.util.spec_from_file_location("plugin", tmp_path / "rm_plugin_src_q.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    keys = ("rm_lazy_q", "app.plugins.plugin", "rm_helper_q")
    try:
        sys.modules["rm_lazy_q"] = Lazy()  # type: ignore[assignment]
        sys.modules["app.plugins.plugin"] = plugin
        wire.dump_object(object())
        import rm_helper_q  # imported after the odd entries were seen
        wire.encode_args(pb.FORMAT_PICKLE, (rm_helper_q.f,), {})
        assert "rm_helper_q" in cloudpickle.list_registry_pickle_by_value()
        for name in ("rm_lazy_q", "app.plugins.plugin", "plugin"):
            assert name not in cloudpickle.list_registry_pickle_by_value()
    finally:
        sys.path.remove(str(tmp_path))
        for key in keys:
            module = sys.modules.pop(key, None)
            if key == "rm_helper_q" and module is not None:
                cloudpickle.unregister_pickle_by_value(module)


def test_progress_and_output_formatting() -> None:
    stage = pb.Progress
    assert wire.format_progress(pb.Progress(stage=stage.STAGE_DOWNLOADING, package="numpy",
                                            fraction=0.5)) == "downloading numpy (50%)"
    assert wire.format_progress(pb.Progress(stage=stage.STAGE_LOG, log_line="Collecting x",
                                            fraction=-1)) == "pip: Collecting x"
    assert wire.format_progress(pb.Progress(stage=stage.STAGE_DONE, fraction=1)) == "done"
    assert wire.output_lines(b"a\nb\xff\n") == ["a", "b\ufffd"]


class _StubSession:
    """Stands in for a Session where no wire may be touched."""

    fmt = pb.FORMAT_PICKLE
    closed = False
    short_id = "01234567"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the proxy touched session.{name}")


def test_proxy_has_no_public_names() -> None:
    proxy = RemoteProxy(_StubSession(), {"process": pb.ATTR_METHOD, "value": pb.ATTR_PROPERTY},
                        "Calculator")  # type: ignore[arg-type]
    assert [n for n in dir(proxy) if not n.startswith("_")] == []
    assert [n for n in dir(RemoteProxy) if not n.startswith("_")] == []
    assert repr(proxy) == "<RemoteProxy Calculator session=01234567>"
    assert str(proxy) == repr(proxy)
    assert callable(proxy.process) and not hasattr(proxy.process, "__await__")
    assert hasattr(proxy.value, "__await__") and callable(proxy.value)
    assert hasattr(proxy.anything_else, "__await__") and callable(proxy.anything_else)
    with pytest.raises(AttributeError):
        proxy.__len__
    with pytest.raises(AttributeError):
        proxy._rm_missing
    with pytest.raises(AttributeError):
        proxy.value = 3
    with pytest.raises(TypeError):
        pickle.dumps(proxy)


# ---------------------------------------------------------------------------
# The fake server: a test double for the client's stream handling

ATTRS = {
    "echo": pb.ATTR_METHOD, "add": pb.ATTR_METHOD, "big": pb.ATTR_METHOD,
    "count": pb.ATTR_GENERATOR, "fail_gen": pb.ATTR_ASYNC_GENERATOR,
    "boom": pb.ATTR_METHOD, "main_error": pb.ATTR_METHOD, "hang": pb.ATTR_ASYNC_METHOD,
    "deadline": pb.ATTR_METHOD, "say": pb.ATTR_METHOD, "say_in_pieces": pb.ATTR_METHOD,
    "say_over_a_gap": pb.ATTR_METHOD, "die": pb.ATTR_METHOD,
    "stall": pb.ATTR_GENERATOR, "unrebuildable": pb.ATTR_METHOD,
    "value": pb.ATTR_ATTRIBUTE, "doubled": pb.ATTR_PROPERTY,
}
SESSION_ID = "0123456789abcdef0123456789abcdef"


class FakeSession:
    """Server side of one fake session: scripted answers by method name."""

    def __init__(self, server: "FakeServer", context: Any) -> None:
        self.server = server
        self.context = context
        self.fmt = pb.FORMAT_PICKLE
        self.args: Dict[int, List[bytes]] = {}
        self.arg_sizes: Dict[int, Any] = {}
        self.calls: Dict[int, pb.Call] = {}
        self.gens: Dict[int, List[Any]] = {}
        self.credit: Dict[int, int] = {}
        self.hanging: set = set()

    def encode(self, value: Any) -> bytes:
        if self.fmt == pb.FORMAT_JSON:
            return json.dumps(value).encode()
        return pickle.dumps(value, protocol=5)

    def decode_args(self, doc: bytes, sizes: Any = ()) -> Any:
        if self.fmt == pb.FORMAT_JSON:
            parsed = json.loads(doc)
            return tuple(parsed["args"]), parsed["kwargs"]
        # Large buffers travel after the pickle (Value.buffer_sizes).
        return wire.decode_value(self.fmt, wire.Buffered(bytearray(doc), sizes)
                                 if sizes else doc)

    async def send(self, **fields: Any) -> None:
        await self.context.write(pb.ServerMessage(**fields))

    async def send_value(self, carrier: str, call_id: int, data: bytes, **extra: Any) -> None:
        chunks = list(wire.iter_chunks(call_id, data))
        if carrier == "result":
            await self.send(result=pb.Result(call_id=call_id, value=chunks[0]))
        else:
            await self.send(item=pb.Item(call_id=call_id, value=chunks[0], **extra))
        for chunk in chunks[1:]:
            await self.send(value=chunk)

    async def error(self, call_id: int, module: str, qualname: str, message: str,
                    **kw: Any) -> None:
        await self.send(error=pb.Error(
            call_id=call_id, module=module, qualname=qualname, message=message,
            type=qualname if module == "builtins" else f"{module}.{qualname}",
            traceback=f"Traceback (most recent call last):\n{qualname}: {message}\n", **kw))

    async def run(self) -> None:
        if self.server.say_max_streams is not None:
            await self.context.send_initial_metadata(
                (("remotemedia-max-streams", self.server.say_max_streams),))
        first = await self.context.read()
        self.server.received.append(first)
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "open":
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be Open")
        if not await self.open(first.open):
            return
        while True:
            message = await self.context.read()
            if message is grpc.aio.EOF:
                return
            self.server.received.append(message)
            kind = message.WhichOneof("msg")
            if kind == "close":
                self.server.closes += 1
                return
            await getattr(self, f"on_{kind}")(getattr(message, kind))

    async def open(self, op: pb.Open) -> bool:
        token = self.server.token
        metadata = dict(self.context.invocation_metadata())
        if token is not None and metadata.get("authorization") != f"Bearer {token}":
            await self.context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        self.fmt = op.format
        data = op.object.data
        more = op.object.more
        while more:
            chunk = (await self.context.read()).value
            self.server.received.append(pb.ClientMessage(value=chunk))
            data += chunk.data
            more = chunk.more
        self.server.objects.append(pickle.loads(data))
        if self.server.hang_open:
            await asyncio.sleep(60)
        if self.server.unavailable is not None:
            await self.context.abort(grpc.StatusCode.UNAVAILABLE, self.server.unavailable)
        if op.requirements:
            for i, package in enumerate(op.requirements):
                await self.send(progress=pb.Progress(
                    stage=pb.Progress.STAGE_INSTALLING, package=package, fraction=i / 2))
                await asyncio.sleep(self.server.progress_delay)
        if op.requirements and not self.server.install_ok:
            await self.context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Failed to install {op.requirements[-1]}: no matching distribution found")
        await asyncio.sleep(self.server.ready_delay)
        await self.send(ready=pb.Ready(session_id=SESSION_ID, python_version="3.11",
                                       attributes=ATTRS, protocol=pb.PROTOCOL_V1,
                                       limits=pb.Limits(prefetch_items=self.server.prefetch,
                                                       max_inflight_calls=self.server.max_inflight,
                                                       max_streams=self.server.max_streams)))
        return True

    async def on_call(self, call: pb.Call) -> None:
        self.calls[call.call_id] = call
        self.server.call_ids.append(call.call_id)
        if call.kind == pb.CALL_GET:
            await self.on_get(call)
            return
        self.args[call.call_id] = [call.args.data]
        self.arg_sizes[call.call_id] = tuple(call.args.buffer_sizes)
        if not call.args.more:
            await self.dispatch(call.call_id)

    async def on_value(self, value: pb.Value) -> None:
        self.args[value.call_id].append(value.data)
        if not value.more:
            await self.dispatch(value.call_id)

    async def on_get(self, call: pb.Call) -> None:
        if call.name == "value":
            await self.send_value("result", call.call_id, self.encode(42))
        elif call.name == "doubled":
            await self.send_value("result", call.call_id, self.encode(84))
        else:
            await self.error(call.call_id, "builtins", "AttributeError",
                             f"'Calculator' object has no attribute '{call.name}'")

    async def dispatch(self, call_id: int) -> None:
        call = self.calls[call_id]
        args, kwargs = self.decode_args(b"".join(self.args.pop(call_id)),
                                        self.arg_sizes.pop(call_id, ()))
        handler = getattr(self, f"do_{call.name}", None)
        if handler is None:
            await self.error(call_id, "builtins", "AttributeError",
                             f"'Calculator' object has no attribute '{call.name}'")
            return
        await handler(call_id, *args, **kwargs)

    async def do_echo(self, call_id: int, *args: Any, **kwargs: Any) -> None:
        await self.send_value("result", call_id, self.encode([list(args), kwargs]))

    async def do_add(self, call_id: int, a: int, b: int) -> None:
        await self.send_value("result", call_id, self.encode(a + b))

    async def do_big(self, call_id: int, n: int) -> None:
        await self.send_value("result", call_id, self.encode(b"z" * n))

    async def do_count(self, call_id: int, n: int) -> None:
        self.gens[call_id] = list(range(n))
        self.credit[call_id] = 0
        await self.send(result=pb.Result(call_id=call_id, generator=True))

    async def do_fail_gen(self, call_id: int) -> None:
        self.gens[call_id] = [0, 1, MyError("third item failed")]
        self.credit[call_id] = 0
        await self.send(result=pb.Result(call_id=call_id, generator=True))

    async def do_boom(self, call_id: int) -> None:
        await self.error(call_id, "builtins", "ValueError", "boom",
                         pickled=pickle.dumps(ValueError("boom")))

    async def do_main_error(self, call_id: int) -> None:
        await self.error(call_id, __name__, "MyError", "mine")

    async def do_unrebuildable(self, call_id: int) -> None:
        await self.error(call_id, __name__, "_Registered", "missing")

    async def do_hang(self, call_id: int) -> None:
        self.hanging.add(call_id)

    async def do_deaf(self, call_id: int) -> None:
        """Never answered, not even its Cancel."""

    async def do_stall(self, call_id: int) -> None:
        """A generator that never yields (until cancelled)."""
        self.hanging.add(call_id)
        await self.send(result=pb.Result(call_id=call_id, generator=True))

    async def do_deadline(self, call_id: int) -> None:
        await self.error(call_id, "builtins", "TimeoutError", "call exceeded 0.3s", timeout=True)

    async def do_say(self, call_id: int) -> None:
        await self.send(output=pb.Output(stream=pb.Output.STDOUT, data=b"hello\nworld\n"))
        await self.send(output=pb.Output(stream=pb.Output.STDERR, data=b"oops\n",
                                         dropped_bytes=10))
        await self.send_value("result", call_id, self.encode(None))

    async def do_say_in_pieces(self, call_id: int) -> None:
        """Output as the worker sends it: what each read of a pipe gave."""
        out, err = pb.Output.STDOUT, pb.Output.STDERR
        for stream, data in [(err, b"Fatal Python error: "), (out, b"caf\xc3"),
                             (err, b"Segmentation fault\n\nCurrent"), (out, b"\xa9\n10%\r"),
                             (err, b" thread (most recent call first):\r"),
                             (err, b'\n  File "x.py", line 1'), (out, b"20%\r")]:
            await self.send(output=pb.Output(stream=stream, data=data))
        await self.send_value("result", call_id, self.encode(None))

    async def do_say_over_a_gap(self, call_id: int) -> None:
        """The rate limit dropped the rest of a stdout line: the count
        comes with the next Output, here on stderr."""
        out, err = pb.Output.STDOUT, pb.Output.STDERR
        await self.send(output=pb.Output(stream=out, data=b"step 1 of 3: loading"))
        await self.send(output=pb.Output(stream=err, data=b"warn\n", dropped_bytes=99))
        await self.send(output=pb.Output(stream=out, data=b"step 3 of 3: done\n"))
        await self.send_value("result", call_id, self.encode(None))

    async def do_die(self, call_id: int) -> None:
        await self.context.abort(grpc.StatusCode.ABORTED, "worker killed by signal 9 (Killed)")

    async def on_pull(self, pull: pb.Pull) -> None:
        self.server.pulls.append((pull.call_id, pull.n, pull.timeout_ms))
        if pull.call_id not in self.gens:
            return
        self.credit[pull.call_id] += pull.n
        self.server.max_credit = max(self.server.max_credit, self.credit[pull.call_id])
        await self.emit(pull.call_id)

    async def emit(self, call_id: int) -> None:
        items = self.gens[call_id]
        while self.credit[call_id] > 0 and items:
            item = items.pop(0)
            if isinstance(item, Exception):
                del self.gens[call_id]
                await self.error(call_id, __name__, type(item).__qualname__, str(item))
                return
            self.credit[call_id] -= 1
            await self.send_value("item", call_id, self.encode(item), index=item)
        if not items:
            del self.gens[call_id]
            await self.send(end=pb.End(call_id=call_id))

    async def on_cancel(self, cancel: pb.Cancel) -> None:
        self.server.cancels.append(cancel.call_id)
        if cancel.call_id in self.gens:
            del self.gens[cancel.call_id]
            await self.send(end=pb.End(call_id=cancel.call_id, cancelled=True))
        elif cancel.call_id in self.hanging:
            self.hanging.discard(cancel.call_id)
            if self.calls[cancel.call_id].name == "stall":
                await self.send(end=pb.End(call_id=cancel.call_id, cancelled=True))
            else:
                await self.error(cancel.call_id, "asyncio.exceptions", "CancelledError", "")


class FakeServer:
    """An in-process grpc.aio server speaking the Session RPC (test double)."""

    def __init__(self, token: Optional[str] = None, prefetch: int = 0,
                 install_ok: bool = False, progress_delay: float = 0.05,
                 hang_open: bool = False, max_inflight: int = 0,
                 unavailable: Optional[str] = None, max_streams: int = 0,
                 say_max_streams: Optional[str] = None, ready_delay: float = 0.0) -> None:
        self.token = token
        # HTTP/2's bound of streams per connection, what the response
        # headers say of it at the stream's start (None: no early headers),
        # and how long each open takes to be Ready.
        self.max_streams = max_streams
        self.say_max_streams = say_max_streams
        self.ready_delay = ready_delay
        self.unavailable = unavailable  # the open ends UNAVAILABLE with it
        self.max_inflight = max_inflight
        self.prefetch = prefetch
        self.install_ok = install_ok
        self.progress_delay = progress_delay
        self.hang_open = hang_open
        self.received: List[pb.ClientMessage] = []
        self.objects: List[Any] = []
        self.call_ids: List[int] = []
        self.pulls: List[tuple] = []
        self.cancels: List[int] = []
        self.closes = 0
        self.stream_ends = 0
        self.max_credit = 0
        self.port = 0
        self.server: Any = None

    async def _session(self, request_iterator: Any, context: Any) -> None:
        try:
            await FakeSession(self, context).run()
        finally:
            self.stream_ends += 1

    async def start(self, port: int = 0) -> None:
        options = [("grpc.max_concurrent_streams", self.max_streams)] if self.max_streams else []
        self.server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler("remotemedia.v1.RemoteExecution", {
            "Session": grpc.stream_stream_rpc_method_handler(
                self._session,
                request_deserializer=pb.ClientMessage.FromString,
                response_serializer=pb.ServerMessage.SerializeToString),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    def config(self, **kw: Any) -> RemoteExecutorConfig:
        kw.setdefault("timeout", 5.0)
        return RemoteExecutorConfig(host="127.0.0.1", port=self.port, **kw)

    def kinds(self) -> List[str]:
        return [m.WhichOneof("msg") for m in self.received]


@contextlib.asynccontextmanager
async def fake_server(**kw: Any) -> AsyncIterator[FakeServer]:
    server = FakeServer(**kw)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def session(**kw: Any) -> AsyncIterator[Any]:
    """A fake server, a connected client and a proxy of a Calculator."""
    fmt = kw.pop("serialization_format", "pickle")
    async with fake_server(**{k: kw.pop(k) for k in ("token", "prefetch") if k in kw}) as server:
        async with RemoteProxyClient(server.config(**kw)) as client:
            proxy = await client.create_proxy(Calculator(), serialization_format=fmt)
            yield server, client, proxy


async def wait_until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------
# Stream handling against the fake server

def test_calls_attributes_and_ids() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            assert isinstance(server.objects[0], Calculator)
            op = server.received[0].open
            assert op.protocol == pb.PROTOCOL_V1 and op.format == pb.FORMAT_PICKLE
            assert list(op.requirements) == [] and op.cloudpickle_version == cloudpickle.__version__
            assert await proxy.add(2, b=3) == 5
            assert await proxy.echo(1, "x", k=[1]) == [[1, "x"], {"k": [1]}]
            assert await proxy.value == 42
            assert await proxy.doubled == 84
            results = await asyncio.gather(*(proxy.add(i, i) for i in range(20)))
            assert results == [2 * i for i in range(20)]
            assert await asyncio.create_task(proxy.add(1, 1)) == 2
            assert server.call_ids == list(range(1, len(server.call_ids) + 1))
            calls = [m.call for m in server.received if m.WhichOneof("msg") == "call"]
            assert all(c.timeout_ms == 5000 for c in calls)
            sent = len(server.received)
            assert "RemoteProxy" in repr(proxy) and "01234567" in repr(proxy)
            assert len(server.received) == sent  # dunder access stays local
    run(main())


def test_json_format() -> None:
    async def main() -> None:
        async with session(serialization_format="json") as (server, client, proxy):
            assert server.received[0].open.format == pb.FORMAT_JSON
            assert await proxy.echo(1, [2], k={"a": None}) == [[1, [2]], {"k": {"a": None}}]
            sent = len(server.received)
            with pytest.raises(TypeError, match="set"):
                proxy.echo({1, 2})
            with pytest.raises(TypeError, match="Calculator"):
                proxy.echo(Calculator())
            await asyncio.sleep(0.05)
            assert len(server.received) == sent  # nothing was sent
    run(main())


def test_large_args_and_results_are_chunked() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            blob = os.urandom(3 * MiB + MiB // 2)
            assert await proxy.echo(blob) == [[blob], {}]
            assert all(m.ByteSize() <= MiB + 1024 for m in server.received)
            assert server.kinds().count("value") >= 3
            data = await proxy.big(5 * MiB + 3)
            assert data == b"z" * (5 * MiB + 3)
    run(main())


def test_generators_stream_on_credit() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            assert [x async for x in proxy.count(10)] == list(range(10))
            assert server.max_credit <= 4
            gen = await proxy.count(3)
            assert [x async for x in gen] == [0, 1, 2]
            assert [x async for x in await proxy.count(0)] == []
            assert all(t == 5000 for (_, _, t) in server.pulls)
    run(main())


def test_generator_prefetch_from_limits() -> None:
    async def main() -> None:
        async with session(prefetch=1) as (server, client, proxy):
            assert [x async for x in proxy.count(5)] == list(range(5))
            assert server.max_credit == 1
    run(main())


def test_generator_error_at_item() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            seen = []
            with pytest.raises(MyError, match="third item failed"):
                async for x in proxy.fail_gen():
                    seen.append(x)
            assert seen == [0, 1]
    run(main())


def test_generator_early_exit_sends_cancel() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            async for x in proxy.count(100):
                if x == 2:
                    break
            assert await proxy.add(1, 2) == 3
            # the iterator's Cancel went out before that Call
            assert server.kinds().index("cancel") < len(server.kinds()) - 1
            assert server.received[-1].call.name == "add"
            assert len(server.cancels) == 1
            gen = await proxy.count(100)
            assert await gen.__anext__() == 0
            await gen.aclose()
            assert len(server.cancels) == 2
            gen = await proxy.count(100)
            assert await gen.__anext__() == 0
            del gen
            gc.collect()
            await wait_until(lambda: len(server.cancels) == 3)
            assert await proxy.add(1, 2) == 3  # the session is fine
    run(main())


def test_a_generator_runs_one_anext_at_a_time() -> None:
    """As an async generator does: a second __anext__ while one waits is a
    RuntimeError, and the first still gets its item, in order."""
    async def main() -> None:
        async with session() as (server, client, proxy):
            gen = await proxy.count(5)
            first = asyncio.ensure_future(gen.__anext__())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="already running"):
                await gen.__anext__()
            assert await first == 0
            assert [x async for x in gen] == [1, 2, 3, 4]
    run(main())


def test_a_session_is_used_on_its_own_loop_only() -> None:
    """A proxy, a generator or a client awaited on another event loop fail
    at once, not after the timeout with the answer lost."""
    async def main() -> None:
        async with session(timeout=30.0) as (server, client, proxy):
            gen = await proxy.count(3)
            outcome: Dict[str, str] = {}

            async def elsewhere() -> None:
                for what, make in (("call", lambda: proxy.add(1, 2)),
                                   ("item", gen.__anext__),
                                   ("aclose", gen.aclose),
                                   ("open", lambda: client.create_proxy(Calculator())),
                                   ("close", lambda: client.close_proxy(proxy)),
                                   ("disconnect", client.disconnect)):
                    try:
                        await asyncio.wait_for(make(), 5)
                    except RuntimeError as exc:
                        outcome[what] = str(exc)
            # asyncio.run in a thread: another loop, while this one runs.
            await asyncio.to_thread(asyncio.run, elsewhere())
            assert set(outcome) == {"call", "item", "aclose", "open", "close",
                                    "disconnect"}, outcome
            assert all("event loop" in m for m in outcome.values()), outcome
            assert await proxy.add(1, 2) == 3
            assert [x async for x in gen] == [0, 1, 2]
    run(main())


def test_a_collected_proxy_ends_its_session() -> None:
    """Dropped without close_proxy, a proxy closes its session once nothing
    made from it is left: its methods, pending calls and generators keep it
    open meanwhile, as they would keep a local object alive."""
    async def main() -> None:
        async with fake_server() as server:
            async with RemoteProxyClient(server.config()) as client:
                proxy = await client.create_proxy(Calculator())
                add = proxy.add
                gen = await proxy.count(3)
                del proxy
                gc.collect()
                await asyncio.sleep(0.1)
                assert server.closes == 0 and len(client._sessions) == 1
                assert await add(1, 2) == 3
                assert [x async for x in gen] == [0, 1, 2]
                del add, gen
                gc.collect()
                await wait_until(lambda: server.closes == 1)
                assert client._sessions == set()
                # Another proxy of the same client is not touched.
                other = await client.create_proxy(Calculator())
                assert await other.add(2, 2) == 4
    run(main())


_CLOSED_LOOP_CLIENT = """
import asyncio, gc, sys, time
from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient

class Calculator:
    def add(self, a, b):
        return a + b

async def make():
    client = RemoteProxyClient(RemoteExecutorConfig(host="127.0.0.1", port=int(sys.argv[1])))
    proxy = await client.create_proxy(Calculator())
    assert await proxy.add(1, 1) == 2
    return client, proxy

loop = asyncio.new_event_loop()
client, proxy = loop.run_until_complete(make())
loop.close()  # still connected, the proxy alive
del client, proxy
gc.collect()
print("dropped", flush=True)
time.sleep(30)
"""


def test_a_proxy_collected_after_its_loop_closed_cancels_its_stream() -> None:
    """No loop to send Close from: the stream is cancelled instead, which
    ends the session on the server while the client process lives on. (A
    process of its own: grpc.aio serves one event loop per process.)"""
    async def main() -> None:
        async with fake_server() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CLOSED_LOOP_CLIENT, str(server.port),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            try:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line == b"dropped\n", line
                await wait_until(lambda: server.stream_ends == 1, timeout=10)
                assert proc.returncode is None  # not the process's exit
                assert server.closes == 0
            finally:
                proc.kill()
                await proc.wait()
    run(main())


def test_iterating_a_plain_result_is_a_type_error() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            with pytest.raises(TypeError, match="not a generator"):
                async for _ in proxy.add(1, 2):
                    pass
    run(main())


def test_an_error_whose_class_cannot_be_rebuilt_fails_only_its_call() -> None:
    """Its class refuses the combined subclass with ValueError: the call
    raises the plain RemoteExecutionError, at once, and the session goes
    on (it used to end the session, and leave that call waiting)."""
    async def main() -> None:
        async with session() as (server, client, proxy):
            with pytest.raises(RemoteExecutionError, match="missing") as info:
                await asyncio.wait_for(proxy.unrebuildable(), 5.0)
            assert type(info.value) is RemoteExecutionError
            assert info.value.remote_type == f"{__name__}._Registered"
            assert await proxy.add(1, 1) == 2
    run(main())


def test_remote_exceptions() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            with pytest.raises(ValueError, match="boom") as info:
                await proxy.boom()
            assert isinstance(info.value, RemoteExecutionError)
            assert info.value.remote_type == "ValueError" and info.value.code is None
            with pytest.raises(MyError, match="mine"):
                await proxy.main_error()
            with pytest.raises(AttributeError, match="nope"):
                await proxy.nope
            with pytest.raises(AttributeError, match="nope"):
                await proxy.nope(1)
            with pytest.raises(RemoteTimeoutError, match="exceeded"):
                await proxy.deadline()
            assert await proxy.add(1, 1) == 2
    run(main())


class _GatedCall:
    """grpc.aio's stream-stream call as the writer sees it: each write
    records its message at its first step, then waits for the test to open
    its gate (gRPC's completion). Reads take the test's replies."""

    def __init__(self, fail_writes: bool = False) -> None:
        self.sent: List[str] = []
        self.order: List[str] = []  # the writes as sent has them, and the reads
        self.gates: List[asyncio.Future[None]] = []
        self.cancelled = False
        self.attempts = 0
        self.fail_writes = fail_writes
        self.replies: asyncio.Queue[Any] = asyncio.Queue()

    async def write(self, message: Any) -> None:
        self.attempts += 1
        if self.fail_writes:
            raise asyncio.InvalidStateError("RPC already finished")
        (message,) = _on_the_wire([message])
        kind = message.WhichOneof("msg")
        self.sent.append(f"{kind} {message.value.seq}" if kind == "value" else kind)
        self.order.append(self.sent[-1])
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate

    async def done_writing(self) -> None:
        self.sent.append("half-close")

    async def read(self) -> Any:
        self.order.append("read")
        return await self.replies.get()

    def cancel(self) -> bool:
        self.cancelled = True
        self.replies.put_nowait(grpc.aio.EOF)
        return True

    def done(self) -> bool:
        return self.cancelled

    def open_gate(self) -> None:
        for gate in self.gates:
            if not gate.done():
                gate.set_result(None)
                return


def _gated_session(call: _GatedCall) -> Any:
    from remotemedia.remote.session import Session
    config = RemoteExecutorConfig(host="127.0.0.1", port=1, timeout=5.0)
    opening = wire.open_messages(b"object", pb.FORMAT_PICKLE, [])
    session = Session(call, pb.FORMAT_PICKLE, config, opening)
    session.set_ready(pb.Ready(session_id="s1"))
    return session


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_call_is_on_the_wire_before_its_caller_waits() -> None:
    """The writer is no task: a write starts in what queues it, so a call
    has gone to gRPC when start_call returns; what is queued behind a write
    that waits goes in order, batches whole, once it completes."""
    async def main() -> None:
        call = _GatedCall()
        session = _gated_session(call)
        assert call.sent == ["open"]  # from the constructor, at once
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        session.start_call("a", pb.CALL_METHOD, doc)
        session._chunk_size = 8  # the next call's arguments: several chunks
        session.start_call("b", pb.CALL_METHOD, b"0123456789abcdefghij")
        session._chunk_size = wire.CHUNK_SIZE
        session.start_call("c", pb.CALL_METHOD, doc)
        assert call.sent == ["open"]  # behind the Open, whose write waits
        for _ in range(6):
            call.open_gate()
            await _turns()
        assert call.sent == ["open", "call", "call", "value 1", "value 2", "call"]
        call.open_gate()
        await _turns()
        session.start_call("d", pb.CALL_METHOD, doc)
        assert len(call.sent) == 7  # nothing waited: written at once
        call.open_gate()
        await session.abort()
    run(main())


def test_a_caller_runs_before_the_next_read_is_armed() -> None:
    """The reader lets the waiter whose wait a message ended (a result, an
    error, a generator's start or end) run before it arms its next read,
    which then overlaps the caller's next round trip instead of delaying
    its return. An item is read past at once: the next one is likely on
    its way."""
    async def main() -> None:
        call = _GatedCall()
        session = _gated_session(call)
        call.open_gate()
        await _turns()
        assert call.order == ["open", "read"]
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        value = pb.Value(data=pickle.dumps(2), total_size=len(pickle.dumps(2)))

        async def caller(name: str) -> Any:
            try:
                is_generator, state = await session.call(name, pb.CALL_METHOD, doc)
            except ValueError:
                call.order.append("raised")
                return None
            call.order.append("generator" if is_generator else "returned")
            return state

        async def reply(task: Any, **message: Any) -> Any:
            await _turns()
            call.open_gate()
            call.replies.put_nowait(pb.ServerMessage(**message))
            return await task

        await reply(asyncio.ensure_future(caller("f")), result=pb.Result(call_id=1, value=value))
        await reply(asyncio.ensure_future(caller("g")), error=pb.Error(
            call_id=2, type="ValueError", module="builtins", qualname="ValueError",
            message="bad"))
        state = await reply(asyncio.ensure_future(caller("gen")),
                            result=pb.Result(call_id=3, generator=True))

        async def consumer() -> None:
            event = await session.next_event(state, "gen()")
            call.order.append(event[0])

        await reply(asyncio.ensure_future(consumer()), item=pb.Item(call_id=3, value=value))
        await reply(asyncio.ensure_future(consumer()), end=pb.End(call_id=3))
        await _turns()
        assert call.order == ["open", "read",
                              "call", "returned", "read",
                              "call", "raised", "read",
                              "call", "generator", "read",
                              "read", "item",
                              "end", "read"]
        await session.abort()
    run(main())


def test_a_name_that_cannot_be_encoded_takes_no_call_id() -> None:
    """A method name with a lone surrogate raises before the call holds an
    id or a slot; the next call goes out as usual."""
    async def main() -> None:
        call = _GatedCall()
        session = _gated_session(call)
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        with pytest.raises(UnicodeEncodeError):
            session.start_call("bad\udc80", pb.CALL_METHOD, doc)
        assert not session._pending and not session._unanswered
        assert session.start_call("good", pb.CALL_METHOD, doc).call_id == 1
        call.open_gate()
        await session.abort()
    run(main())


def test_a_cancelled_caller_leaves_the_write_alone() -> None:
    """Cancelling the task that awaits a call whose write still waits does
    not touch gRPC's write (which would cancel the stream): the write
    completes, and the call's Cancel follows it."""
    async def main() -> None:
        call = _GatedCall()
        session = _gated_session(call)
        call.open_gate()
        await _turns()
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        task = asyncio.ensure_future(session.call("slow", pb.CALL_METHOD, doc))
        await _turns()
        assert call.sent == ["open", "call"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not call.gates[-1].done() and not call.cancelled
        call.open_gate()
        await _turns()
        assert call.sent == ["open", "call", "cancel"]
        assert not call.cancelled
        call.open_gate()
        await session.abort()
        assert call.gates[-1].done()
    run(main())


def test_closing_cancels_a_write_that_waits_as_a_task_would() -> None:
    async def main() -> None:
        call = _GatedCall()
        session = _gated_session(call)
        await session.abort()  # the Open's write still waits
        assert call.cancelled and call.gates[0].cancelled()
        await _turns()
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        with pytest.raises(rx.SessionClosedError):
            session.start_call("late", pb.CALL_METHOD, doc)
        assert call.sent == ["open"]
    run(main())


def test_a_write_stopped_after_its_wait_ended_gets_no_further() -> None:
    """Stopping the writer between the end of what a write waits for and
    the write's next step still cancels it there, as a task's would be."""
    async def main() -> None:
        call = _GatedCall()
        steps: List[str] = []
        real_write = call.write

        async def write(message: Any) -> None:
            await real_write(message)
            steps.append("went on")

        call.write = write  # type: ignore[method-assign]
        session = _gated_session(call)
        call.open_gate()  # done, its write not yet resumed
        session._stop_writing()
        await _turns()
        assert steps == [] and session._writing is None
    run(main())


def test_a_failed_write_stops_the_writer_quietly(caplog: Any) -> None:
    """A write that finds the stream over ends the writing: what is queued
    later is dropped, the caller is not raised at, and nothing is logged
    above DEBUG (the reader reports the stream's status)."""
    async def main() -> None:
        call = _GatedCall(fail_writes=True)
        session = _gated_session(call)
        doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
        session.start_call("a", pb.CALL_METHOD, doc)
        await _turns()
        assert call.attempts == 1  # the Open's
        await session.abort()
    with caplog.at_level(logging.DEBUG, logger="remotemedia"):
        run(main())
    failed = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert failed and all(r.levelno == logging.DEBUG for r in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_local_timeout_cancels_the_call() -> None:
    async def main() -> None:
        async with session(timeout=0.3) as (server, client, proxy):
            start = time.monotonic()
            with pytest.raises(RemoteTimeoutError) as info:
                await proxy.hang()
            assert isinstance(info.value, TimeoutError)
            assert "worker killed 2 s past its deadline" in str(info.value)
            assert time.monotonic() - start < 2.0
            await wait_until(lambda: server.cancels == [1])
            assert await proxy.add(1, 1) == 2
    run(main())


def test_each_wait_times_out_at_its_own_deadline() -> None:
    """The calls' waits share one timer (Session._watch): each still
    times out a timeout (and its grace) after it began, not at another's
    deadline, and answers that come meanwhile are delivered."""
    async def main() -> None:
        async with session(timeout=0.4) as (server, client, proxy):
            async def timed(coro: Any) -> Tuple[float, float]:
                start = time.monotonic()
                with pytest.raises(RemoteTimeoutError):
                    await coro
                return start, time.monotonic()

            first = asyncio.create_task(timed(proxy.hang()))
            await wait_until(lambda: server.call_ids == [1])
            await asyncio.sleep(0.2)
            second = asyncio.create_task(timed(proxy.hang()))
            await wait_until(lambda: server.call_ids == [1, 2])
            for i in range(5):
                assert await proxy.add(i, 1) == i + 1
            # Bounded: a wait that nothing wakes would hang the test.
            (start1, end1), (start2, end2) = await asyncio.wait_for(
                asyncio.gather(first, second), 5.0)
            assert end1 - start1 >= 0.4 and end2 - start2 >= 0.4
            # Each at its own deadline: the first not held to the second's.
            assert end2 - end1 >= 0.1
            await wait_until(lambda: server.cancels == [1, 2])
            assert await proxy.add(2, 2) == 4
            # A timer is left only while a wait is under way.
            session_ = proxy._rm_session
            await client.close_proxy(proxy)
            assert session_._watch_timer is None
    run(main())


def test_a_stalled_generator_times_out_while_calls_go_on() -> None:
    async def main() -> None:
        async with session(timeout=0.4) as (server, client, proxy):
            async def drain_stalled() -> float:
                start = time.monotonic()
                with pytest.raises(RemoteTimeoutError):
                    async for _ in proxy.stall():
                        pass
                return time.monotonic() - start

            stalled = asyncio.create_task(drain_stalled())
            await wait_until(lambda: server.call_ids == [1])
            for i in range(5):
                assert await proxy.add(i, i) == 2 * i
            assert 0.4 <= await asyncio.wait_for(stalled, 5.0) < 3.0
            await wait_until(lambda: server.cancels == [1])
            assert [x async for x in proxy.count(3)] == [0, 1, 2]
    run(main())


def test_cancelled_task_abandons_the_call() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            task = asyncio.create_task(proxy.hang())
            await wait_until(lambda: server.call_ids == [1])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_until(lambda: server.cancels == [1])
            assert await proxy.add(2, 2) == 4
    run(main())


def test_worker_death_fails_pending_and_later_calls() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            pending = asyncio.create_task(proxy.hang())
            await wait_until(lambda: server.call_ids == [1])
            with pytest.raises(WorkerDiedError, match="signal 9") as info:
                await proxy.die()
            assert info.value.code == grpc.StatusCode.ABORTED
            assert str(info.value) == "worker killed by signal 9 (Killed)"
            with pytest.raises(WorkerDiedError):
                await pending
            with pytest.raises(WorkerDiedError):
                await proxy.add(1, 1)
            with pytest.raises(WorkerDiedError):
                async for _ in proxy.count(3):
                    pass
            assert "closed" in repr(proxy)
    run(main())


def test_close_proxy_and_leaving_the_client() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with RemoteProxyClient(server.config()) as client:
                first = await client.create_proxy(Calculator())
                second = await client.create_proxy(Calculator())
                pending = asyncio.create_task(second.hang())
                await wait_until(lambda: server.call_ids == [1])
                await client.close_proxy(first)
                assert server.closes == 1
                assert server.kinds()[-1] == "close"
                with pytest.raises(SessionClosedError):
                    await first.add(1, 2)
                await client.close_proxy(first)  # idempotent
            assert server.closes == 2
            with pytest.raises(SessionClosedError):
                await pending
            with pytest.raises(SessionClosedError):
                await second.add(1, 2)
    run(main())


def test_output_is_logged(caplog: Any) -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            await proxy.say()
    with caplog.at_level(logging.INFO, logger="remotemedia.remote"):
        run(main())
    records = [(r.levelno, r.getMessage()) for r in caplog.records
               if r.name == "remotemedia.remote"]
    assert (logging.INFO, "[session 01234567] hello") in records
    assert (logging.INFO, "[session 01234567] world") in records
    assert (logging.WARNING, "[session 01234567] oops") in records
    assert any(level == logging.WARNING and "10 bytes" in msg and "dropped" in msg
               for level, msg in records)


def test_output_lines_split_between_chunks_are_logged_whole(caplog: Any) -> None:
    """A chunk of output may end in mid-line (a crash's traceback, written
    piece by piece): the rest of the line comes with the next chunk of its
    stream. Each line was logged in fragments; an unfinished one is logged
    when the session ends."""
    async def main() -> None:
        async with session() as (server, client, proxy):
            await proxy.say_in_pieces()
            assert ("[session 01234567]  thread (most recent call first):"
                    not in [r.getMessage() for r in caplog.records])
            await client.close_proxy(proxy)
    with caplog.at_level(logging.INFO, logger="remotemedia.remote"):
        run(main())
    records = [(r.levelno, r.getMessage()) for r in caplog.records
               if r.name == "remotemedia.remote" and r.getMessage().startswith("[session")]
    w, i = logging.WARNING, logging.INFO
    assert records == [
        (w, "[session 01234567] Fatal Python error: Segmentation fault"),
        (w, "[session 01234567] "),
        (i, "[session 01234567] caf\u00e9"),
        (i, "[session 01234567] 10%"),
        (w, "[session 01234567] Current thread (most recent call first):"),
        (i, "[session 01234567] 20%"),
        (w, '[session 01234567]   File "x.py", line 1'),
    ], records


def test_an_unfinished_line_is_not_joined_across_a_gap(caplog: Any) -> None:
    """Bytes the server's rate limit dropped are counted on the next Output,
    whatever its stream: the unfinished lines of every stream are let go
    before the gap, not joined with what comes after it."""
    async def main() -> None:
        async with session() as (server, client, proxy):
            await proxy.say_over_a_gap()
    with caplog.at_level(logging.INFO, logger="remotemedia.remote"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "remotemedia.remote"]
    assert lines[:4] == ["[session 01234567] step 1 of 3: loading",
                         "[session 01234567] 99 bytes of output dropped by the server's "
                         "rate limit",
                         "[session 01234567] warn", "[session 01234567] step 3 of 3: done"]


def test_output_lines_are_bounded_and_keep_characters_whole() -> None:
    """A line without an end is let go past 64 KiB, not held without bound,
    and a UTF-8 character cut there waits whole for the next chunk."""
    lines, most = wire.OutputLines(), wire.MAX_PARTIAL_LINE
    assert lines.feed(1, b"y" * most) == []  # at the bound: held
    assert lines.feed(1, b"y") == ["y" * (most + 1)]  # past it: let go
    assert lines.streams() == []
    euro = "\u20ac".encode()  # 3 bytes
    assert lines.feed(2, b"x" * (most - 1) + euro[:2]) == ["x" * (most - 1)]
    assert lines.feed(2, euro[2:] + b"!\n") == ["\u20ac!"]


def test_calls_over_the_inflight_limit_wait_for_a_slot() -> None:
    """Ready.limits.max_inflight_calls 2: a third call is not sent while two
    are unanswered, a cancelled call keeps its slot until the server
    answers its Cancel, a wait is bounded by the timeout, and a waiter
    that goes (cancelled, timed out) leaves no slot taken."""
    async def main() -> None:
        async with fake_server(max_inflight=2) as server:
            async with RemoteProxyClient(server.config(timeout=2.0)) as client:
                calc = await client.create_proxy(Calculator())
                h1 = asyncio.ensure_future(calc.hang())
                h2 = asyncio.ensure_future(calc.hang())
                third = asyncio.ensure_future(calc.add(1, 2))
                fourth = asyncio.ensure_future(calc.add(3, 4))
                await wait_until(lambda: len(server.call_ids) == 2)
                await asyncio.sleep(0.1)
                assert len(server.call_ids) == 2, server.call_ids
                third.cancel()  # while it waits: nothing was sent
                await asyncio.sleep(0.05)
                assert len(server.call_ids) == 2
                h1.cancel()  # its slot frees once the server answers the Cancel
                with pytest.raises(asyncio.CancelledError):
                    await h1
                assert await asyncio.wait_for(fourth, 2) == 7
                assert len(server.call_ids) == 3
                h2.cancel()
                await asyncio.gather(h2, return_exceptions=True)
                await asyncio.sleep(0.1)
                assert await calc.add(1, 1) == 2  # no slot was left taken
                # Calls the server never answers, even on Cancel, keep their
                # slots: the next call's wait ends with the timeout.
                deaf = await client.create_proxy(Calculator())
                gone = await asyncio.gather(deaf.deaf(), deaf.deaf(), return_exceptions=True)
                assert all(isinstance(e, RemoteTimeoutError) for e in gone), gone
                with pytest.raises(RemoteTimeoutError, match="calls in flight"):
                    await deaf.add(5, 6)
    run(main())


def test_a_cancel_that_comes_with_the_slot_is_not_lost() -> None:
    """The slot frees (the waiter is woken) and the waiting task is
    cancelled in the same loop turn: the task still ends cancelled, and the
    slot goes to the next waiter. asyncio.wait_for up to Python 3.11
    returned the result and dropped the cancellation."""
    from remotemedia.remote.session import Session

    async def main() -> None:
        s = Session.__new__(Session)
        s._loop = asyncio.get_running_loop()
        s._slot_waiters = collections.deque()
        s._slots_promised = 0
        s._unanswered = {1}
        s._max_inflight = 1
        s.call_timeout = s.timeout = 5.0
        first = asyncio.ensure_future(s._wait_slot("m"))
        second = asyncio.ensure_future(s._wait_slot("n"))
        await asyncio.sleep(0.01)
        s._answered(1)  # wakes the first ...
        first.cancel()  # ... which is cancelled in the same turn
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)  # its slot went to the second
        assert s._slots_promised == 0
    run(main())


def test_install_failure_and_progress() -> None:
    async def main() -> None:
        async with fake_server() as server:
            cfg = server.config(pip_packages=["numpy", "nonexistent-package"], timeout=2.0)
            events: List[Any] = []
            async with RemoteProxyClient(cfg) as client:
                with pytest.raises(InstallError, match="nonexistent-package") as info:
                    await client.create_proxy(Calculator(), progress=events.append)
            assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert [e.package for e in events] == ["numpy", "nonexistent-package"]
            assert list(server.received[0].open.requirements) == ["numpy", "nonexistent-package"]
    run(main())


def test_authentication() -> None:
    async def main() -> None:
        async with fake_server(token="s3cret") as server:
            async with RemoteProxyClient(server.config(auth_token="wrong")) as client:
                with pytest.raises(AuthenticationError, match="invalid token"):
                    await client.create_proxy(Calculator())
            async with RemoteProxyClient(server.config(auth_token="s3cret")) as client:
                proxy = await client.create_proxy(Calculator())
                assert await proxy.add(1, 2) == 3
    run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_retried_then_fails() -> None:
    async def main() -> None:
        cfg = RemoteExecutorConfig(host="127.0.0.1", port=_free_port(), timeout=3.0,
                                   max_retries=2)
        start = time.monotonic()
        async with RemoteProxyClient(cfg) as client:
            with pytest.raises(ConnectionLostError, match="3 attempts") as info:
                await client.create_proxy(Calculator())
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert isinstance(info.value, ConnectionError)
        assert time.monotonic() - start < 3.5
    run(main())


def test_a_server_that_cannot_start_the_session_is_not_said_unreachable() -> None:
    """The server's own UNAVAILABLE is retried as a connection failure is,
    and then reported in the server's words, not as a failure to connect."""
    async def main() -> None:
        async with fake_server(unavailable="cannot start a worker for the session") as server:
            cfg = server.config(max_retries=1)
            async with RemoteProxyClient(cfg) as client:
                with pytest.raises(ConnectionLostError) as info:
                    await client.create_proxy(Calculator())
        assert str(info.value) == (f"cannot open a session on 127.0.0.1:{server.port} "
                                   "(2 attempts): cannot start a worker for the session")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    run(main())


def test_retries_connection_failures_then_fails_clearly():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there

    async def main():
        cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=5.0, max_retries=2)
        async with RemoteProxyClient(cfg) as client:
            t = time.monotonic()
            with pytest.raises(rx.RemoteMediaError):
                await client.create_proxy(Calculator())
            assert time.monotonic() - t < 10
    run(main())


@pytest.mark.parametrize("details", [
    "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Handshake read failed",
    "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: tcp handshaker shutdown",
    # Seen with a server slowed by AddressSanitizer (make sanitize-test).
    "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Failed to connect to remote host: FD Shutdown",
])
def test_a_tls_handshake_cut_short_names_what_to_check(details):
    """grpcio reports an untrusted certificate as such, or, by timing, only
    as a handshake that ended: the message then says what to check."""
    from remotemedia.remote.client import connect_failure
    cfg = RemoteExecutorConfig(host="127.0.0.1", port=1, ssl_enabled=True,
                               ca_file="/etc/rm/ca.crt")
    message = connect_failure(cfg, 1, details)
    assert message.startswith(f"cannot open a session on 127.0.0.1:1 (1 attempt): {details} (")
    assert "certificate is signed by the CA in ca_file (/etc/rm/ca.crt)" in message
    if "FD Shutdown" in details:  # grpcio's word for a connect that timed out too
        assert "the server is reachable" in message
    cfg = RemoteExecutorConfig(host="127.0.0.1", port=1, ssl_enabled=True)
    assert "a CA of the system bundle" in connect_failure(cfg, 2, details)
    # Cleartext, or grpcio's own word on the certificate: no hint.
    plain = RemoteExecutorConfig(host="127.0.0.1", port=1)
    assert connect_failure(plain, 1, details).endswith(details)
    told = details + ": CERTIFICATE_VERIFY_FAILED"
    assert connect_failure(cfg, 3, told) == (
        f"cannot open a session on 127.0.0.1:1 (3 attempts): {told}")


def test_retry_reaches_a_server_that_starts_late() -> None:
    async def main() -> None:
        port = _free_port()
        server = FakeServer()

        async def start_later() -> None:
            await asyncio.sleep(0.4)
            await server.start(port)

        starter = asyncio.create_task(start_later())
        try:
            cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=8.0, max_retries=6)
            async with RemoteProxyClient(cfg) as client:
                proxy = await client.create_proxy(Calculator())
                assert await proxy.add(2, 3) == 5
        finally:
            await starter
            await server.stop()
    run(main())


def test_never_awaited_call_warns() -> None:
    async def main() -> None:
        async with session() as (server, client, proxy):
            with pytest.warns(RuntimeWarning, match="never awaited"):
                proxy.add(1, 2)
                gc.collect()
            attribute = proxy.value  # reading an attribute without awaiting is fine
            del attribute
    run(main())


def _make_pki(directory: Any) -> Dict[str, bytes]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (PEM)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    import ipaddress

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool,
             san: Optional[Any] = None) -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remotemedia test CA")])
    ca_cert = cert("remotemedia test CA", ca_key, ca_name, ca_key, True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = cert("localhost", server_key, ca_name, ca_key, False,
                       [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = cert("client", client_key, ca_name, ca_key, False)
    pem = {
        "ca": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert.public_bytes(serialization.Encoding.PEM),
        "server_key": key_pem(server_key),
        "client_cert": client_cert.public_bytes(serialization.Encoding.PEM),
        "client_key": key_pem(client_key),
    }
    for name, data in pem.items():
        (directory / f"{name}.pem").write_bytes(data)
    return pem


def test_tls_with_ca_file_and_client_certificate(tmp_path: Any) -> None:
    pem = _make_pki(tmp_path)

    async def main() -> None:
        server = FakeServer()
        server.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("remotemedia.v1.RemoteExecution", {
            "Session": grpc.stream_stream_rpc_method_handler(
                server._session, request_deserializer=pb.ClientMessage.FromString,
                response_serializer=pb.ServerMessage.SerializeToString)})
        server.server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials(
            [(pem["server_key"], pem["server_cert"])], root_certificates=pem["ca"],
            require_client_auth=True)
        server.port = server.server.add_secure_port("127.0.0.1:0", credentials)
        await server.server.start()
        try:
            cfg = server.config(ssl_enabled=True, ca_file=str(tmp_path / "ca.pem"),
                                client_cert_file=tmp_path / "client_cert.pem",
                                client_key_file=tmp_path / "client_key.pem")
            async with RemoteProxyClient(cfg) as client:
                proxy = await client.create_proxy(Calculator())
                assert await proxy.add(20, 22) == 42
            # Without the client certificate the handshake fails: not retried forever.
            cfg = server.config(ssl_enabled=True, ca_file=str(tmp_path / "ca.pem"),
                                timeout=2.0, max_retries=1)
            async with RemoteProxyClient(cfg) as client:
                with pytest.raises(ConnectionLostError):
                    await client.create_proxy(Calculator())
        finally:
            await server.stop()
    run(main())


def test_progress_restarts_the_open_timeout(caplog: Any) -> None:
    async def main() -> None:
        async with fake_server(install_ok=True, progress_delay=0.15) as server:
            packages = [f"pkg{i}" for i in range(5)]  # 0.75 s of install, timeout 0.4 s
            async with RemoteProxyClient(server.config(pip_packages=packages,
                                                       timeout=0.4)) as client:
                proxy = await client.create_proxy(Calculator())
                assert await proxy.add(1, 2) == 3
    with caplog.at_level(logging.INFO, logger="remotemedia.remote"):
        run(main())
    assert any("installing pkg4" in r.getMessage() for r in caplog.records)


def test_open_timeout() -> None:
    async def main() -> None:
        async with fake_server(hang_open=True) as server:
            start = time.monotonic()
            async with RemoteProxyClient(server.config(timeout=0.3)) as client:
                with pytest.raises(RemoteTimeoutError, match="loading the object there"):
                    await client.create_proxy(Calculator())
            assert time.monotonic() - start < 2.0
    run(main())


def test_connection_loss_fails_pending_and_later_calls() -> None:
    async def main() -> None:
        server = FakeServer()
        await server.start()
        async with RemoteProxyClient(server.config()) as client:
            proxy = await client.create_proxy(Calculator())
            pending = asyncio.create_task(proxy.hang())
            await wait_until(lambda: server.call_ids == [1])
            await server.stop()
            with pytest.raises(ConnectionLostError) as info:
                await pending
            assert isinstance(info.value, ConnectionError)
            with pytest.raises(ConnectionLostError):
                await proxy.add(1, 2)
    run(main())


def test_a_burst_of_opens_spreads_over_connections_before_any_ready() -> None:
    """Five create_proxy at once on a new client, against a server that
    takes two streams per connection and is slow to be Ready: the first
    stream's headers say the bound, so the others go on new connections
    instead of waiting, unsent, in gRPC's queue until their timeout."""
    async def main() -> None:
        async with fake_server(max_streams=2, say_max_streams="2", ready_delay=0.5) as server:
            async with RemoteProxyClient(server.config(timeout=5.0)) as client:
                proxies = await asyncio.gather(
                    *(client.create_proxy(Calculator()) for _ in range(5)))
                assert [await p.add(i, 1) for i, p in enumerate(proxies)] == [1, 2, 3, 4, 5]
                assert len(client._conns) == 3
                assert [c.max_streams for c in client._conns] == [2, 2, 2]
    run(main(), timeout=20)


@pytest.mark.parametrize("said", ["", "x", "-1", "0", " 3"])
def test_headers_that_do_not_say_the_bound_leave_it_to_ready(said: str) -> None:
    """Headers at once, with a garbled bound: the opens are not held back
    beyond them, and the first Ready's bound serves the sessions opened
    after it."""
    async def main() -> None:
        async with fake_server(say_max_streams=said) as server:
            async with RemoteProxyClient(server.config(timeout=5.0)) as client:
                proxies = await asyncio.gather(
                    *(client.create_proxy(Calculator()) for _ in range(4)))
                assert [await p.add(i, 1) for i, p in enumerate(proxies)] == [1, 2, 3, 4]
                assert len(client._conns) == 1 and client._conns[0].max_streams == 0
    run(main(), timeout=20)


def test_a_server_that_sends_no_early_headers_holds_a_burst_briefly() -> None:
    """A server that sends its headers with its first message only (as one
    before them did), and takes 2 s to be Ready: the other opens of a
    burst wait PROBE_GRACE for the first one's headers, not its Ready, so
    four of them fit in a 3 s timeout together."""
    async def main() -> None:
        async with fake_server(ready_delay=2.0) as server:
            async with RemoteProxyClient(server.config(timeout=3.0)) as client:
                proxies = await asyncio.gather(
                    *(client.create_proxy(Calculator()) for _ in range(4)))
                assert [await p.add(i, 1) for i, p in enumerate(proxies)] == [1, 2, 3, 4]
                assert len(client._conns) == 1
    run(main(), timeout=20)


def test_a_first_stream_that_fails_before_its_headers_hands_the_probe_on() -> None:
    """The first session's stream ends before any header (here: the server
    refused it): the next session to open reads the bound from its own."""
    async def main() -> None:
        async with fake_server(max_streams=2, say_max_streams="2") as server:
            async with RemoteProxyClient(server.config(timeout=5.0, max_retries=0)) as client:
                await client.connect()
                conn = client._conns[0]
                refused = conn.rpc
                conn.rpc = conn.channel.stream_stream(
                    "/nope/Nope", request_serializer=wire.serialize,
                    response_deserializer=wire.parse_server_message)
                with pytest.raises(RemoteMediaError):
                    await client.create_proxy(Calculator())
                for _ in range(100):  # the probe task ends after the open
                    if conn.probe is None:
                        break
                    await asyncio.sleep(0.01)
                assert conn.probe is None and conn.max_streams == 0
                conn.rpc = refused
                proxies = await asyncio.gather(
                    *(client.create_proxy(Calculator()) for _ in range(3)))
                assert len(client._conns) == 2 and conn.max_streams == 2
                assert [await p.add(i, 1) for i, p in enumerate(proxies)] == [1, 2, 3]
    run(main(), timeout=20)
