"""Large values as pickle protocol 5 out-of-band buffers, both directions:
numpy arrays, bytes, bytearray and memoryview objects travel after the
pickle (Value.buffer_sizes), arrive with their type, contents, shape and
writability, and arrays are not copied out of the received buffer. A value
whose buffers do not add up is an error of that call, not a crash."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clientlib import runner
from h2raw import H2Client, grpc_frame, open_session, wait_msgs
from remotemedia._proto import remotemedia_pb2 as pb
from remotemedia.remote import RemoteProxyClient, wire

run = runner(120.0)


class Media:
    def __init__(self):
        self.frame = np.full((720, 1280, 3), 7, dtype=np.uint8)

    def echo(self, x):
        return x

    def describe(self, a):
        """What arrived: an array viewing the received buffer, not a copy."""
        base = a
        while getattr(base, "base", None) is not None and isinstance(base, np.ndarray):
            base = base.base
        return {"type": type(a).__name__, "dtype": a.dtype.str, "shape": a.shape,
                "writeable": bool(a.flags.writeable), "sum": float(a.sum()),
                "owns": bool(a.flags.owndata), "base": type(base).__name__}

    def frames(self, n):
        for i in range(n):
            self.frame[0, 0, 0] = i
            yield self.frame

    def add_one(self, a):
        a += 1  # the received array is writable
        return a


class Plain:
    def echo(self, x):
        return x


async def with_media(srv, fn):
    async with RemoteProxyClient(srv.config(timeout=60.0)) as client:
        return await fn(await client.create_proxy(Media()))


def test_numpy_array_both_ways(server):
    a = np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)

    async def go(p):
        return await p.describe(a), await p.echo(a), await p.add_one(a)

    info, back, plus = run(with_media(server, go))
    assert info["type"] == "ndarray" and info["dtype"] == "<f4"
    assert info["shape"] == (1000, 2000) and info["writeable"]
    assert info["sum"] == float(a.sum())
    # The worker's array views the buffer it received: no copy.
    assert not info["owns"] and info["base"] != "ndarray"
    assert back.dtype == a.dtype and back.shape == a.shape and (back == a).all()
    assert back.flags.writeable and not back.flags.owndata
    assert (plus == a + 1).all()


def test_arrays_that_cannot_go_out_of_band_still_travel(server):
    a = np.arange(300_000, dtype=np.int64).reshape(1000, 300)
    views = [a[:, ::2], a.T, np.asfortranarray(a), a[::3]]

    async def go(p):
        return [await p.echo(v) for v in views]

    for sent, got in zip(views, run(with_media(server, go))):
        assert got.shape == sent.shape and (got == sent).all()


@pytest.mark.parametrize("value", [
    b"q" * 200_000, bytearray(b"r" * 100_000), memoryview(b"s" * 70_000),
    b"small", bytearray(b"tiny"), memoryview(b"short"),
    {"frame": b"f" * 65_536, "meta": [1, 2]}, (b"a" * 70_000, b"b" * 70_000),
])
def test_buffers_keep_their_type_and_contents(server, value):
    got = run(with_media(server, lambda p: p.echo(value)))
    assert type(got) is type(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        assert bytes(got) == bytes(value)
    else:
        assert got == value


class Flag(int):
    """A subclass of a plain type: it must keep its class."""


def test_plain_results_and_their_subclasses_keep_type_and_value(server):
    # Results of the plain types take a shorter path than cloudpickle;
    # anything else, a subclass of one too, does not.
    values = [None, True, False, 0, -7, 2**200, 1.5, float("inf"), 3 - 4j, "",
              "héllo ☃", Flag(3), [1, "a"], {"k": (None, 2.5)}]

    async def go(p):
        return [await p.echo(v) for v in values]

    got = run(with_media(server, go))
    assert [type(v) for v in got] == [type(v) for v in values]
    assert got == values
    assert math.isnan(run(with_media(server, lambda p: p.echo(float("nan")))))


def test_memoryview_keeps_format_and_shape(server):
    m = memoryview(np.arange(40_000, dtype=np.int32).reshape(200, 200))
    got = run(with_media(server, lambda p: p.echo(m)))
    assert type(got) is memoryview
    assert got.format == "i" and got.shape == (200, 200)
    assert got.tobytes() == m.tobytes()


def test_generator_of_arrays(server):
    async def go(p):
        out = []
        async for f in p.frames(5):
            out.append((f.shape, int(f[0, 0, 0]), int(f[1, 1, 1])))
        return out

    assert run(with_media(server, go)) == [((720, 1280, 3), i, 7) for i in range(5)]


def _echo_calls(server, calls):
    """Through a raw client, Plain().echo calls of these (args, buffer_sizes),
    call ids 1, 2 ...: their answers, once the session closed cleanly."""
    c = H2Client(server.host, server.port, timeout=20)
    try:
        sid = open_session(c, Plain())
        for call_id, (args, sizes) in enumerate(calls, start=1):
            call = pb.ClientMessage(call=pb.Call(
                call_id=call_id, name="echo",
                args=pb.Value(data=args, total_size=len(args), buffer_sizes=sizes)))
            c.send(sid, grpc_frame(call.SerializeToString()), end=False)
        msgs = wait_msgs(c, sid, 1 + len(calls), timeout=20)
        c.send(sid, b"", end=True)
        assert c.wait(sid, timeout=20).grpc_status == 0
        return msgs[1:]
    finally:
        c.close()


@pytest.mark.parametrize("sizes", [[1 << 30], [10, 1 << 62]])
def test_buffer_sizes_larger_than_the_value_fail_the_call(server, sizes):
    """A raw client lies about the buffers: the call fails, the session and
    the server go on."""
    args = bytes(wire.encode_args(pb.FORMAT_PICKLE, (), {}))
    (err,) = _echo_calls(server, [(args, sizes)])
    assert err.WhichOneof("msg") == "error", err
    assert err.error.call_id == 1
    assert "buffers are larger" in err.error.message


@pytest.mark.parametrize("sizes", [[150], [100, 100]])
def test_buffer_sizes_that_do_not_match_the_pickle_fail_the_call(server, sizes):
    """A raw client's buffer_sizes fit in the value but not its pickle:
    smaller than the buffer sent, or one buffer more than the pickle uses.
    The call fails, rather than the method getting a buffer cut short or
    shifted; the session goes on and takes a true value."""
    import pickle
    bufs = []
    doc = pickle.dumps(((pickle.PickleBuffer(bytearray(b"a" * 100 + b"b" * 100)),), {}),
                       protocol=5, buffer_callback=bufs.append)
    args = doc + bytes(bufs[0].raw())
    err, ok = _echo_calls(server, [(args, sizes), (args, [200])])
    assert err.WhichOneof("msg") == "error", err
    assert err.error.call_id == 1
    assert "buffer sizes do not match its pickle" in err.error.message
    assert ok.WhichOneof("msg") == "result", ok
    got = wire.decode_value(pb.FORMAT_PICKLE, wire.Buffered(
        bytearray(ok.result.value.data), ok.result.value.buffer_sizes))
    assert bytes(got) == b"a" * 100 + b"b" * 100
