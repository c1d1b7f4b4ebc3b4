"""Large values as pickle protocol 5 out-of-band buffers, for both ends.

The client (``remotemedia.remote.wire``) imports this module; the worker
compiles the same file into its binary and imports it as
``_remotemedia_oob``, since a session's environment need not hold
remotemedia. Standard library only.

A value travels as its pickle, then each of its buffers, as the data of its
chunks (``Value.buffer_sizes`` in chunk 0), so that an array is never
copied into a pickle. numpy arrays offer their buffers themselves; bytes,
bytearray and memoryview objects are wrapped here (pickle writes bytes and
bytearray into the pickle without asking any hook, and cannot carry a
memoryview at all).
"""

import io
import operator

try:
    # pickle's C half: the worker imports no more of pickle than this
    # (pickle.py brings re and struct, hundreds of KiB an idle session
    # would hold).
    from _pickle import PickleBuffer, Unpickler, UnpicklingError
except ImportError:  # another Python than CPython
    from pickle import PickleBuffer, Unpickler, UnpicklingError

#: Smallest bytes, bytearray or memoryview sent out of band.
OOB_MIN = 64 * 1024
#: Containers longer than this are not searched for large bytes.
WRAP_ITEMS = 64


class MalformedValue(ValueError):
    """A value whose buffer sizes do not fit it (Value.buffer_sizes)."""


class Oob:
    """Stands in for a large bytes or bytearray, or any memoryview, while
    it is pickled: reduced to a PickleBuffer, out of band."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __reduce_ex__(self, protocol):
        m = self.obj
        if type(m) is not memoryview:
            return type(m), (PickleBuffer(m),)
        if not m.contiguous or m.nbytes < OOB_MIN:
            flat = m.tobytes()
            if m.format == "B" and m.ndim == 1:
                return memoryview, (flat,)
            return operator.methodcaller("cast", m.format, m.shape), (memoryview(flat),)
        if m.format != "B" or m.ndim != 1:
            return operator.methodcaller("cast", m.format, m.shape), (Oob(m.cast("B")),)
        return memoryview, (PickleBuffer(m),)


def wrap_large(obj, depth=2):
    """obj with its memoryviews and large bytes and bytearray objects
    (itself, or in the tuples, lists and dicts of up to WRAP_ITEMS items of
    its first depth levels) as Oob; a container is rebuilt only if
    something in it was."""
    t = type(obj)
    if ((t is bytes or t is bytearray) and len(obj) >= OOB_MIN) or t is memoryview:
        return Oob(obj)
    if depth == 0 or t not in (tuple, list, dict) or len(obj) > WRAP_ITEMS:
        return obj
    values = obj.values() if t is dict else obj
    for x in values:
        if wrap_large(x, depth - 1) is not x:
            break
    else:
        return obj  # the common case: nothing to wrap, nothing rebuilt
    if t is dict:
        return {k: wrap_large(v, depth - 1) for k, v in obj.items()}
    return t([wrap_large(x, depth - 1) for x in obj])


def collector(buffers):
    """A pickle buffer_callback that puts each contiguous buffer, as a
    memoryview, out of band in buffers (and the others in the pickle)."""
    def keep(pb):
        try:
            buffers.append(pb.raw())
        except BufferError:  # not contiguous: in the pickle
            return True
        return False
    return keep


def split(data, sizes):
    """The pickle and the buffers of a value received with buffers of these
    sizes after its pickle; MalformedValue if they do not fit in it."""
    view = memoryview(data)
    start = len(view) - sum(sizes)
    if start < 0 or any(n < 0 for n in sizes):
        raise MalformedValue("malformed value: its buffers are larger than it")
    pickled = view[:start]
    buffers = []
    for n in sizes:
        buffers.append(view[start:start + n])
        start += n
    return pickled, buffers


class _Supply:
    """The buffers, one each time the pickle asks for one; MalformedValue
    if it asks for more than there are. used counts those given."""

    __slots__ = ("buffers", "used")

    def __init__(self, buffers):
        self.buffers = buffers
        self.used = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.used == len(self.buffers):
            raise MalformedValue("malformed value: its pickle uses more "
                                 "buffers than its buffer sizes give")
        self.used += 1
        return self.buffers[self.used - 1]


def loads(data, sizes, unpickler=Unpickler):
    """Unpickle a value received with buffers of these sizes after its
    pickle, with an unpickler of this class; the buffers become the
    unpickled arrays' memory.

    MalformedValue if the sizes do not fit the value, if the pickle does not
    end where the buffers begin, or if it uses fewer or more buffers than
    the sizes give: sizes smaller than the buffers sent would otherwise cut
    them short without a word. Sizes that sum right but split the buffers
    elsewhere cannot be told from the pickle: each buffer gets its size."""
    pickled, buffers = split(data, sizes)
    supply = _Supply(buffers)
    f = io.BytesIO(pickled)
    try:
        value = unpickler(f, buffers=supply).load()
    except UnpicklingError as exc:  # cut short by sizes too large
        raise MalformedValue("malformed value: %s" % exc) from None
    if f.tell() == len(pickled) and supply.used == len(buffers):
        return value
    del value, f, pickled, buffers, supply  # the error holds none of it
    raise MalformedValue("malformed value: its buffer sizes do not "
                         "match its pickle")
