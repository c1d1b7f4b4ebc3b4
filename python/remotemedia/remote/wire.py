"""Encoding of the remotemedia v1 messages: pure functions, no I/O.

What lives here:

- serialising the hosted object (cloudpickle, with the user's own modules
  registered to travel by value) and the ``Open`` message that carries it;
- encoding call arguments as one document (pickle or JSON) and decoding
  results and items;
- splitting a value into ``Value`` chunks of at most 1 MiB of data (chunk 0
  inside its carrier, the rest as stand-alone ``ClientMessage.value``
  messages, encoded here with one copy of their data) and reassembling the
  server's chunks (its ``ServerMessage.value`` chunks read here, as views
  of the bytes gRPC hands over).

See ``docs/protocol.md`` for the rules the ``.proto`` cannot express.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import pickle
import sys
import sysconfig
import types
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import cloudpickle

from remotemedia import _oob

try:
    from remotemedia._proto import remotemedia_pb2 as _pb2
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "remotemedia._proto.remotemedia_pb2 is missing: run `make pyproto` in the "
        "source tree (it generates the module from proto/remotemedia.proto)") from exc

#: The generated protobuf module. Typed Any: its classes are built at run time.
pb: Any = _pb2

log = logging.getLogger("remotemedia.remote")

__all__ = [
    "Buffered",
    "CHUNK_SIZE",
    "Continuation",
    "Encoded",
    "FORMATS",
    "ProtocolError",
    "ValueAssembler",
    "call_messages",
    "cancel_message",
    "close_message",
    "decode_value",
    "dump_object",
    "encode_args",
    "iter_chunks",
    "open_messages",
    "parse_server_message",
    "pb",
    "pull_message",
    "serialize",
]

#: Most data bytes in one ``Value`` chunk (protocol limit: 1 MiB).
CHUNK_SIZE = 1 << 20

#: ``serialization_format`` name -> ``Format`` enum value.
FORMATS: Dict[str, int] = {"pickle": pb.FORMAT_PICKLE, "json": pb.FORMAT_JSON}

_PICKLE_PROTOCOL = 5


class ProtocolError(ValueError):
    """The server broke a rule of the protocol (for example a chunk out of order)."""


# ---------------------------------------------------------------------------
# Out-of-band buffers (remotemedia/_oob.py says how)


class Encoded:
    """A value to send: its document, then its out-of-band buffers."""

    __slots__ = ("data", "buffers")

    def __init__(self, data: Any, buffers: List[memoryview]) -> None:
        self.data = data
        self.buffers = buffers

    def __len__(self) -> int:
        return len(self.data) + sum(b.nbytes for b in self.buffers)

    def segments(self) -> List[memoryview]:
        """The data of the value's chunks, in order."""
        return [memoryview(self.data)] + [b.cast("B") for b in self.buffers]


class Buffered:
    """A value received with out-of-band buffers of these sizes after its
    pickle, in one writable buffer (the arrays' memory once unpickled)."""

    __slots__ = ("data", "sizes")

    def __init__(self, data: bytearray, sizes: Sequence[int]) -> None:
        self.data = data
        self.sizes = tuple(sizes)


def _dumps(obj: Any) -> Any:
    """Pickle ``obj`` (protocol 5): bytes, or :class:`Encoded` when it has
    out-of-band buffers."""
    buffers: List[memoryview] = []
    data = cloudpickle.dumps(_oob.wrap_large(obj), protocol=_PICKLE_PROTOCOL,
                             buffer_callback=_oob.collector(buffers))
    return Encoded(data, buffers) if buffers else data


def _loads(data: Any) -> Any:
    """Unpickle bytes, or a :class:`Buffered` value with its buffers."""
    if not isinstance(data, Buffered):
        return pickle.loads(data)
    try:
        return _oob.loads(data.data, data.sizes)
    except _oob.MalformedValue as exc:
        raise ProtocolError(str(exc)) from None


# ---------------------------------------------------------------------------
# The hosted object

@functools.lru_cache(maxsize=1)
def _site_dirs() -> Tuple[str, ...]:
    """Directories of installed packages and of the standard library."""
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.normpath(path))
            dirs.add(os.path.realpath(path))
    return tuple(sorted(dirs))


def is_user_module(module: types.ModuleType) -> bool:
    """True when ``module`` is the user's own code, which the server cannot import.

    Not user code: ``__main__`` (cloudpickle already sends it by value),
    builtins and the standard library, anything under a ``site-packages`` or
    ``dist-packages`` directory, modules that are not Python source (an
    extension module's classes cannot travel by value), and ``remotemedia``
    itself.
    """
    if not isinstance(module, types.ModuleType):  # sys.modules may hold anything
        return False
    name = module.__dict__.get("__name__")
    if not isinstance(name, str):
        return False
    top = name.partition(".")[0]
    if name == "__main__" or top == "remotemedia":
        return False
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    path = module.__dict__.get("__file__")
    if not isinstance(path, str) or not path.endswith((".py", ".pyc")):
        return False
    # The path as imported, then as resolved: Debian's sitecustomize is a
    # link from the standard library to /etc.
    return not _installed_path(path) and not _installed_path(os.path.realpath(path))


def _installed_path(path: str) -> bool:
    """True for a path in the standard library or an installed package."""
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(path.startswith(d + os.sep) for d in _site_dirs())


def _modules_of(obj: Any) -> List[str]:
    """Names of the modules defining ``obj``'s class and its bases.

    When ``obj`` is itself a class or a function, its own module (and its
    bases' modules) count too.
    """
    classes: List[type] = list(type(obj).__mro__)
    if isinstance(obj, type):
        classes.extend(obj.__mro__)
    names = [getattr(c, "__module__", None) for c in classes]
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        names.append(getattr(obj, "__module__", None))
    return [n for n in dict.fromkeys(names) if isinstance(n, str)]


# Modules already looked at by register_user_modules, and how many
# sys.modules held then.
_looked_at: Set[str] = set()
_modules_seen = 0


def register_user_modules(obj: Any = None) -> List[str]:
    """Register the user's own modules with cloudpickle to go by value.

    All of them, not only those of ``obj``'s class: a method may call a
    function of another of the user's modules, a package's module import
    its sibling, an argument be of a class from a third. The registration
    stays in force. ``sys.modules`` is looked through again only when it
    has grown, so that the check costs nothing on a call's path; the
    modules of ``obj`` are always looked at. Returns the names newly
    registered.
    """
    global _modules_seen
    names = _modules_of(obj) if obj is not None else []
    if len(sys.modules) != _modules_seen:
        _modules_seen = len(sys.modules)  # each entry below is looked at, odd or not
        names.extend(n for n in list(sys.modules) if n not in _looked_at)
    if not names:
        return []
    registered = cloudpickle.list_registry_pickle_by_value()
    added = []
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        _looked_at.add(name)
        try:
            # cloudpickle takes only a module under its own name (not one
            # loaded from a file and stored under another key).
            if (name in registered or not is_user_module(module)
                    or module.__name__ != name):
                continue
            cloudpickle.register_pickle_by_value(module)
        except Exception as exc:  # an odd entry: it goes by reference
            log.debug("module %s is not sent by value: %r", name, exc)
            continue
        registered.add(name)
        added.append(name)
    return added


def dump_object(obj: Any) -> Any:
    """cloudpickle ``obj`` (protocol 5) for ``Open.object``: bytes, or
    :class:`Encoded` with its large buffers out of band."""
    register_user_modules(obj)
    return _dumps(obj)


def python_version() -> str:
    """The client's Python ``major.minor``, as ``Open.python_version`` carries it."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def open_messages(payload: bytes, fmt: int, requirements: Sequence[str],
                  chunk_size: int = CHUNK_SIZE) -> Iterable[Any]:
    """The encoded ``ClientMessage``s that open a session, for :func:`serialize`.

    The first is ``Open`` with chunk 0 of the object (call id 0); the rest of
    the object follows as ``ClientMessage.value`` with seq 1, 2, ... All are
    encoded by hand, as ``SerializeToString`` writes them, chunk 0 with one
    copy: an open comes after a pause, when protobuf's code is cold, and
    built by protobuf the Open of a small object took 257-277 us on the
    development VM 200 ms after the last, by hand 85-91 us.
    """
    total, sizes, pieces = _pieces(payload, chunk_size)
    view, start, end = pieces[0]
    head, tail = _value_fields(0, 0, len(pieces) > 1, end - start, total, sizes)
    fields: List[Any] = [b"\x08" + _varint(pb.PROTOCOL_V1)]
    if fmt:
        fields.append(b"\x10" + _varint(fmt))
    fields += [b"\x1a", _varint(len(head) + end - start + len(tail)), head, view[start:end],
               tail]
    for requirement in requirements:  # repeated: an empty one is written too
        if type(requirement) is not str:  # the config's list changed since its checks
            raise TypeError(f"pip_packages must contain only strings, found "
                            f"{type(requirement).__name__} {requirement!r}")
        utf8 = requirement.encode("utf-8")
        fields += [b"\x22", _varint(len(utf8)), utf8]
    for number, text in ((5, python_version()), (6, cloudpickle.__version__)):
        utf8 = text.encode("utf-8")
        if utf8:
            fields += [bytes((number << 3 | 2,)), _varint(len(utf8)), utf8]
    size = sum(len(f) for f in fields)
    first = b"".join([b"\x0a", _varint(size), *fields])
    return itertools.chain((first,), _continuations(0, pieces))


# ---------------------------------------------------------------------------
# Arguments and results

def encode_args(fmt: int, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """Encode a call's arguments as one document (``Call.args``).

    pickle: ``cloudpickle.dumps((args, kwargs), protocol=5)``, large buffers
    out of band (an :class:`Encoded`); json: ``{"args": [...], "kwargs":
    {...}}`` in UTF-8.

    Raises:
        TypeError: with json, a value JSON cannot carry; the message names
            its type. Nothing has been sent.
    """
    if fmt == pb.FORMAT_JSON:
        try:
            return json.dumps({"args": list(args), "kwargs": kwargs},
                              ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # a lone surrogate: UnicodeEncodeError
            raise TypeError(f"argument cannot be sent as JSON: {exc}") from exc
    if _plain(args) and _plain(kwargs) and _plain(kwargs.values()):
        # What cloudpickle would write, byte for byte: its hooks are not
        # asked about these types (Pickler.reducer_override).
        return pickle.dumps((tuple(args), dict(kwargs)), protocol=_PICKLE_PROTOCOL)
    register_user_modules()  # an argument's class may come from a module imported since
    return _dumps((tuple(args), dict(kwargs)))


#: Argument types that plain pickle writes as cloudpickle does.
_PLAIN_TYPES = frozenset({int, float, str, bool, type(None)})


def _plain(values: Iterable[Any]) -> bool:
    """True when every value is a None, bool, int, float or str, or bytes
    too small to go out of band (exactly those types: a subclass, even of
    str as a keyword's name, may need cloudpickle)."""
    for v in values:
        t = type(v)
        if t not in _PLAIN_TYPES and not (t is bytes and len(v) < _oob.OOB_MIN):
            return False
    return True


def decode_value(fmt: int, data: Any) -> Any:
    """Decode a result or item document: ``pickle.loads`` (with its
    out-of-band buffers, for a :class:`Buffered`) or ``json.loads``.

    An empty document decodes to None.
    """
    if isinstance(data, Buffered):
        return _loads(data)
    if not data:
        return None
    if fmt == pb.FORMAT_JSON:
        return json.loads(data)
    return pickle.loads(data)


# ---------------------------------------------------------------------------
# Chunking and reassembly

def _pieces(data: Any, chunk_size: int) -> Tuple[int, List[int], List[Tuple[memoryview, int, int]]]:
    """The chunk slices of ``data``: its total size, its buffers' sizes, and
    (view, start, end) of each chunk, none of them across two buffers.

    A writable buffer (a bytearray, an array) is copied whole here, so that
    the value sent is the one of this moment; a readonly one is sliced as
    its chunks are made.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be > 0")
    if isinstance(data, Encoded):
        segments = data.segments()
        sizes = [len(b) for b in segments[1:]]
    else:
        segments, sizes = [memoryview(data)], []
    segments = [v if v.readonly else memoryview(v.tobytes()) for v in segments]
    total = sum(len(v) for v in segments)
    pieces = [(v, o, min(o + chunk_size, len(v)))
              for v in segments for o in range(0, len(v), chunk_size)] or [(segments[0], 0, 0)]
    return total, sizes, pieces


def _fill_first(value: Any, call_id: int, total: int, sizes: List[int],
                pieces: List[Tuple[memoryview, int, int]]) -> None:
    """Write chunk 0 of a value into ``value``, an empty ``Value``."""
    view, start, end = pieces[0]
    value.call_id = call_id
    value.more = len(pieces) > 1
    value.data = view[start:end].tobytes()
    value.total_size = total
    value.buffer_sizes.extend(sizes)


def iter_chunks(call_id: int, data: Any, chunk_size: int = CHUNK_SIZE) -> Iterator[Any]:
    """Split ``data`` (bytes, or an :class:`Encoded` value: its document,
    then its buffers) into ``Value`` chunks of at most ``chunk_size`` bytes,
    none of them across two buffers.

    Chunk 0 has seq 0, ``total_size`` and the buffers' sizes; every chunk
    but the last has ``more`` set. An empty value is one empty chunk.
    The chunks are made as they are taken, each a copy of its slice; a
    writable buffer is copied whole when the first is taken.
    """
    total, sizes, pieces = _pieces(data, chunk_size)
    first = pb.Value()
    _fill_first(first, call_id, total, sizes, pieces)
    yield first
    for seq in range(1, len(pieces)):
        view, start, end = pieces[seq]
        yield pb.Value(call_id=call_id, seq=seq, more=seq + 1 < len(pieces),
                       data=view[start:end].tobytes())


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _varint(n: int) -> bytes:
    """n, 0 <= n < 2**64, as a protobuf varint. Most numbers of a small
    call (its id, lengths, kind) take one or two bytes: made at once."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if 0 < n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _value_fields(call_id: int, seq: int, more: bool, size: int, total: int = 0,
                  sizes: Sequence[int] = ()) -> Tuple[bytes, bytes]:
    """A ``Value``'s encoded fields before its data of ``size`` bytes (the
    data's key and length included), and those after it."""
    head = b"\x08" + _varint(call_id) if call_id else b""
    if seq:
        head += b"\x10" + _varint(seq)
    if more:
        head += b"\x18\x01"
    if size:
        head += b"\x22" + _varint(size)
    tail = b"\x28" + _varint(total) if total else b""
    if sizes:  # packed, as proto3 writes a repeated number
        packed = b"".join(_varint(n) for n in sizes)
        tail += b"\x3a" + _varint(len(packed)) + packed
    return head, tail


def _value_message(call_id: int, seq: int, more: bool, data: memoryview) -> bytes:
    """The encoded ``ClientMessage`` of a continuation chunk, as
    ``SerializeToString`` writes it, made with one copy of ``data``."""
    head, _ = _value_fields(call_id, seq, more, len(data))
    return b"".join((b"\x32", _varint(len(head) + len(data)), head, data))


def _messages_of(carrier: Any, value: Any, call_id: int, data: Any,
                 chunk_size: int) -> Iterable[Any]:
    """``carrier``, with chunk 0 of ``data`` written into its ``value`` (an
    empty ``Value`` within it), then the rest as encoded
    ``ClientMessage.value`` messages (:func:`serialize`), made as the writer
    takes them: a few MiB at a time, not a second copy of the whole value.

    Made all at once, the messages of a 64 MiB argument were faulted in
    anew at every such call (47,584 page faults a call against 31,232, and
    1.00 s against 0.78 s for the upload on the development VM). Made as
    protobuf messages, each chunk was copied four times on its way to gRPC.
    """
    total, sizes, pieces = _pieces(data, chunk_size)
    _fill_first(value, call_id, total, sizes, pieces)
    return itertools.chain((carrier,), _continuations(call_id, pieces))


def _continuations(call_id: int, pieces: List[Tuple[memoryview, int, int]]) -> Iterator[bytes]:
    """The encoded ``ClientMessage.value`` of each chunk after the first,
    made as they are taken."""
    last = len(pieces) - 1
    for seq in range(1, len(pieces)):
        view, start, end = pieces[seq]
        yield _value_message(call_id, seq, seq < last, view[start:end])


def serialize(message: Any) -> bytes:
    """A ``ClientMessage``'s bytes on the wire: an encoded one passes through."""
    return message if type(message) is bytes else message.SerializeToString()


def call_messages(call_id: int, name: str, kind: int, doc: Optional[bytes],
                  timeout_ms: int, chunk_size: int = CHUNK_SIZE) -> Iterable[Any]:
    """The ``ClientMessage``s of one call, for :func:`serialize`: ``Call``,
    then its arg chunks.

    ``doc`` is None for ``CALL_GET``, which carries no arguments. A call
    whose arguments fit one chunk, the common case, is one message encoded
    by hand (:func:`_call_message`); the chunks of a larger one follow
    encoded, made as the writer takes them (``_messages_of``).
    """
    if doc is None or (type(doc) is bytes and len(doc) <= chunk_size):
        return (_call_message(call_id, name, kind, doc, timeout_ms),)
    msg = pb.ClientMessage()
    call = msg.call
    call.call_id = call_id
    call.name = name
    call.kind = kind
    call.timeout_ms = timeout_ms
    return _messages_of(msg, call.args, call_id, doc, chunk_size)


def _call_message(call_id: int, name: str, kind: int, doc: Optional[bytes],
                  timeout_ms: int) -> bytes:
    """The encoded ``ClientMessage`` of a call with its arguments in one
    chunk (none for ``doc`` None), as ``SerializeToString`` writes it.

    Built by protobuf and serialized, a small call's message cost the
    client 5.2 us on the development VM (the best of 5 runs of 300,000);
    by hand, 2.8 us.
    """
    for n in (call_id, timeout_ms):  # the numbers from outside: refused as protobuf did
        if not 0 <= n < 1 << 64:  # (a timeout set on the config after its checks, say)
            raise ValueError(f"value out of range for a protobuf uint64: {n}")
    # Call.call_id and its Value's: the same field number, the same bytes.
    cid = b"\x08" + _varint(call_id) if call_id else b""
    args = b""
    if doc is not None:
        size = len(doc)  # the Value's data, and its total
        head, tail = (cid + b"\x22" + _varint(size), b"\x28" + _varint(size)) if size else (cid, b"")
        args = b"".join((b"\x22", _varint(len(head) + size + len(tail)), head, doc, tail))
    utf8 = name.encode("utf-8")
    body = b"".join((
        cid,
        b"\x12" + _varint(len(utf8)) + utf8 if utf8 else b"",
        b"\x18" + _varint(kind) if kind else b"",
        args,
        b"\x28" + _varint(timeout_ms) if timeout_ms else b""))
    return b"\x12" + _varint(len(body)) + body


def pull_message(call_id: int, n: int, timeout_ms: int) -> Any:
    """``Pull{call_id, n}``: credit for n more generator items."""
    return pb.ClientMessage(pull=pb.Pull(call_id=call_id, n=n, timeout_ms=timeout_ms))


def cancel_message(call_id: int) -> Any:
    """``Cancel{call_id}``: stop a generator or abandon a pending call."""
    return pb.ClientMessage(cancel=pb.Cancel(call_id=call_id))


def close_message() -> Any:
    """``Close``: end the session."""
    return pb.ClientMessage(close=pb.Close())


#: Messages shorter than this are left to protobuf: a copy costs them little.
_CONTINUATION_MIN = 1 << 16


class Continuation:
    """A ``ServerMessage.value`` chunk read by :func:`parse_server_message`
    without protobuf: ``data`` is a view of the message's bytes."""

    __slots__ = ("call_id", "seq", "more", "data")

    def __init__(self, call_id: int, seq: int, more: bool, data: memoryview) -> None:
        self.call_id = call_id
        self.seq = seq
        self.more = more
        self.data = data


def _read_varint(buf: bytes, i: int, end: int, most: int = 10) -> Tuple[int, int]:
    """The varint at buf[i:end] and the offset after it; ValueError if it
    is cut short, over 64 bits, or longer than ``most`` bytes (protobuf
    reads a key or a length in at most 5)."""
    value = shift = 0
    end = min(end, i + most)
    while i < end:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >> 64:
                break
            return value, i
        shift += 7
    raise ValueError("bad varint")


def _continuation(buf: bytes) -> Optional[Continuation]:
    """buf as a Continuation if it is exactly one ``value`` field whose
    Value has only call_id, seq, more and data; None otherwise."""
    if buf[:1] != b"\x42":
        return None
    try:
        size, i = _read_varint(buf, 1, len(buf), 5)
        if i + size != len(buf):
            return None
        call_id = seq = more = 0
        data = memoryview(b"")
        while i < len(buf):
            key, i = _read_varint(buf, i, len(buf), 5)
            if key in (0x08, 0x10, 0x18):
                v, i = _read_varint(buf, i, len(buf))
                if key == 0x08:
                    call_id = v
                elif key == 0x10:
                    if v >> 32:
                        return None  # protobuf would cut it to 32 bits
                    seq = v
                else:
                    more = v
            elif key == 0x22:
                n, i = _read_varint(buf, i, len(buf), 5)
                if i + n > len(buf):
                    return None
                data = memoryview(buf)[i:i + n]
                i += n
            else:
                return None
    except ValueError:
        return None
    return Continuation(call_id, seq, bool(more), data)


def parse_server_message(buf: bytes) -> Any:
    """A ``ServerMessage`` from its bytes; a large continuation chunk as a
    :class:`Continuation`, whose data is not copied.

    Parsed by protobuf, each chunk of a large result was copied three
    times before its value was joined: by the parse, by reading its
    ``data``, and by the join. Anything but a plain chunk goes to protobuf,
    which raises on bytes that are not a ServerMessage.
    """
    if len(buf) >= _CONTINUATION_MIN:
        chunk = _continuation(buf)
        if chunk is not None:
            return chunk
    return pb.ServerMessage.FromString(buf)


class ValueAssembler:
    """Reassembles chunked values, one in progress per call id.

    A carrier (``Result.value`` or ``Item.value``) starts a value with
    :meth:`start`; ``ServerMessage.value`` continuations go to :meth:`feed`.
    Each returns ``(tag, data)`` once the value is complete, else None; the
    tag is whatever the caller passed to :meth:`start` (e.g. the item index).
    """

    def __init__(self) -> None:
        self._parts: Dict[int, Tuple[Any, int, List[bytes]]] = {}
        self._sizes: Dict[int, Tuple[int, ...]] = {}

    def start(self, call_id: int, value: Any, tag: Any) -> Optional[Tuple[Any, bytes]]:
        """Begin the value whose chunk 0 is ``value``.

        Raises:
            ProtocolError: a value for this call is already in progress, or
                the chunk's seq is not 0.
        """
        if call_id in self._parts:
            raise ProtocolError(f"call {call_id}: new value before the last one ended")
        if value.seq != 0:
            raise ProtocolError(f"call {call_id}: first chunk has seq {value.seq}")
        if not value.more:
            return tag, self._whole(call_id, [value.data], value.buffer_sizes)
        self._parts[call_id] = (tag, 0, [value.data])
        if value.buffer_sizes:
            self._sizes[call_id] = tuple(value.buffer_sizes)
        return None

    @staticmethod
    def _whole(call_id: int, parts: List[bytes], sizes: Sequence[int]) -> Any:
        """A finished value: bytes, or :class:`Buffered` in one writable
        buffer when it has out-of-band buffers."""
        if not sizes:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        data = bytearray(sum(len(p) for p in parts))
        view = memoryview(data)
        offset = 0
        for p in parts:
            view[offset:offset + len(p)] = p
            offset += len(p)
        return Buffered(data, sizes)

    def feed(self, value: Any) -> Optional[Tuple[Any, bytes]]:
        """Add a continuation chunk.

        Raises:
            KeyError: no value is in progress for ``value.call_id`` (for
                example the call was abandoned); the caller ignores it.
            ProtocolError: the chunk is out of sequence.
        """
        call_id = value.call_id
        tag, seq, parts = self._parts[call_id]
        if value.seq != seq + 1:
            del self._parts[call_id]
            self._sizes.pop(call_id, None)
            raise ProtocolError(
                f"call {call_id}: chunk seq {value.seq} after {seq}")
        parts.append(value.data)
        if value.more:
            self._parts[call_id] = (tag, seq + 1, parts)
            return None
        del self._parts[call_id]
        return tag, self._whole(call_id, parts, self._sizes.pop(call_id, ()))

    def discard(self, call_id: int) -> None:
        """Forget a value in progress (its call was abandoned)."""
        self._parts.pop(call_id, None)
        self._sizes.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._parts)


# ---------------------------------------------------------------------------
# Human-readable forms

_STAGES = {
    pb.Progress.STAGE_RESOLVING: "resolving",
    pb.Progress.STAGE_DOWNLOADING: "downloading",
    pb.Progress.STAGE_INSTALLING: "installing",
    pb.Progress.STAGE_DONE: "done",
    pb.Progress.STAGE_LOG: "pip",
}


def format_progress(progress: Any) -> str:
    """One line describing a ``Progress`` message, for the log."""
    stage = _STAGES.get(progress.stage, "progress")
    if progress.stage == pb.Progress.STAGE_LOG or (progress.log_line and not progress.package):
        return f"{stage}: {progress.log_line}"
    text = stage
    if progress.package:
        text += f" {progress.package}"
    if progress.fraction >= 0 and progress.stage != pb.Progress.STAGE_DONE:
        text += f" ({progress.fraction * 100:.0f}%)"
    if progress.log_line:
        text += f": {progress.log_line}"
    return text


def output_lines(data: bytes) -> List[str]:
    """Split an ``Output`` chunk into lines (invalid UTF-8 is replaced)."""
    return data.decode("utf-8", errors="replace").splitlines()


#: Most bytes of one line an :class:`OutputLines` holds back for its end.
MAX_PARTIAL_LINE = 64 * 1024


def _utf8_whole(data: bytes) -> int:
    """How much of ``data`` ends on a whole UTF-8 character: its length, or
    where a character that the next chunk completes begins."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: whole if its sequence is all here
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


class OutputLines:
    """Whole lines of a session's output streams. The worker sends what each
    read of the user code's pipe gives, so a line (a traceback's, a
    crash's, written piece by piece) may end in the next ``Output`` chunk of
    its stream: the part after a chunk's last line end waits for the rest.
    A line ends at ``\n`` or ``\r`` (a progress bar's), and is let go
    unfinished past :data:`MAX_PARTIAL_LINE` bytes, or by :meth:`flush`."""

    __slots__ = ("_tails", "_cr")

    def __init__(self) -> None:
        self._tails: Dict[int, bytes] = {}
        self._cr: Dict[int, bool] = {}  # the stream's last line ended in \r

    def feed(self, stream: int, data: bytes) -> List[str]:
        """The lines that ``data``, a chunk of ``stream``, completes."""
        if self._cr.pop(stream, False) and data[:1] == b"\n":
            data = data[1:]  # the \n of a \r\n split between two chunks
        data = self._tails.pop(stream, b"") + data
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if len(data) - end > MAX_PARTIAL_LINE:
            end = _utf8_whole(data)
        if end < len(data):
            self._tails[stream] = data[end:]
        elif end:
            self._cr[stream] = data[end - 1:end] == b"\r"
        return output_lines(data[:end])

    def flush(self, stream: int) -> List[str]:
        """The unfinished line of ``stream``, as it is (at its end, or
        before a gap: bytes the server dropped)."""
        self._cr.pop(stream, None)
        return output_lines(self._tails.pop(stream, b""))

    def streams(self) -> List[int]:
        """The streams with an unfinished line."""
        return list(self._tails)
