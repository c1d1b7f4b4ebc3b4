"""A fake front for driving build/remotemedia-worker directly.

It does what remotemediad does for one session and nothing more: it spawns
the worker with its end of an AF_UNIX socketpair on fd 3 and the pipes of
its stdout and stderr on fds 4-7, a scrubbed environment and the session
directory as cwd, sends Init and Open, relays calls, reads the pipes (on
Flush, as they fill, and once the worker is gone), and reassembles what
comes back. Every read has a timeout. The front's rate cap on output is
not here: the integration tests against the server test it.

    w = FakeFront(tmp_path)
    w.start()
    ready = w.open(obj)
    assert w.call_value("add", 1, 2) == 3

Frames are a 4-byte big-endian length of what follows, a type byte (1: a
ClientMessage or ServerMessage, 2: a WorkerControl) and the payload.
"""

import collections
import fcntl
import importlib.util
import json
import os
import pathlib
import pickle
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

import cloudpickle

from remotemedia._proto import remotemedia_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parents[2]
# REMOTEMEDIA_WORKER selects another build, e.g. one with sanitizers.
WORKER = pathlib.Path(os.environ.get("REMOTEMEDIA_WORKER",
                                     ROOT / "build" / "remotemedia-worker"))
FRAME_MSG = 1
FRAME_CTL = 2
CHUNK = 1 << 20
PY_VERSION = "%d.%d" % sys.version_info[:2]

_worker_pb2 = None


def worker_pb2():
    """protoc-generated Python for proto/worker.proto, built once."""
    global _worker_pb2
    if _worker_pb2 is None:
        out = tempfile.mkdtemp(prefix="rm-worker-pb2-")
        subprocess.run(["protoc", "--proto_path=%s" % (ROOT / "proto"),
                        "--python_out=%s" % out,
                        str(ROOT / "proto" / "worker.proto")], check=True)
        spec = importlib.util.spec_from_file_location(
            "rm_worker_pb2", os.path.join(out, "worker_pb2.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _worker_pb2 = mod
    return _worker_pb2


def _child_fds(fds):
    """In the child: fds[i] on fd 3 + i (the socket, then each output
    pipe's write end and read end) and, as closefrom(8), nothing else
    inherited (close-on-exec descriptors go at exec by themselves)."""
    for i, fd in enumerate(fds):
        os.dup2(fd, 3 + i)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 + len(fds):
            try:
                if os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                pass


class WorkerGone(Exception):
    """The worker closed its end of the socket."""


class RemoteError(Exception):
    """An Error answer; .error is the pb.Error message."""

    def __init__(self, error):
        super().__init__("%s: %s" % (error.type, error.message))
        self.error = error


class Fatal(Exception):
    """A WorkerControl.fatal; .code and .message."""

    def __init__(self, fatal):
        super().__init__("fatal %d: %s" % (fatal.code, fatal.message))
        self.code = fatal.code
        self.message = fatal.message


class Answer:
    """One reassembled answer for a call."""

    def __init__(self, kind, msg, data=None, chunks=()):
        self.kind = kind        # result, error, item, end
        self.msg = msg          # the carrier message
        self.data = data        # the whole value, for result and item
        self.chunks = list(chunks)  # the data size of each chunk
        self.buffer_sizes = ()  # out-of-band buffers after the pickle

    def __repr__(self):
        return "Answer(%s, %r)" % (self.kind, self.msg)


class FakeFront:
    """One session's worker, driven the way the front drives it."""

    def __init__(self, session_dir, *, fmt="pickle", max_value_bytes=64 << 20,
                 sys_path=(), log_level="debug", parent_pid=None, wrap=(),
                 eager_output=True):
        self.session_dir = pathlib.Path(session_dir)
        # A command that execs its arguments, keeping the pid (unshare...).
        self.wrap = list(wrap)
        self.fmt = fmt
        self.max_value_bytes = max_value_bytes
        self.sys_path = list(sys_path)
        self.log_level = log_level
        self.parent_pid = os.getpid() if parent_pid is None else parent_pid
        self.proc = None
        self.sock = None
        self.pipes = []         # read ends of the worker's stdout and stderr
        # Read them as they fill, as the front does; False: only on Flush
        # and once the worker is gone (what a call wrote must then fit).
        self.eager_output = eager_output
        self.flushes = 0
        self.buf = bytearray()
        self.next_id = 1
        self.inbox = collections.defaultdict(collections.deque)
        self.partial = {}       # call id -> [Answer, seq, bytearray]
        self.outputs = []       # (stream, data, dropped_bytes)
        self.answered = []      # call ids, in the order of their Result or Error
        self.fatal = None
        self.taken = False  # the worker said it has the Open
        self.ready = None
        self.eof = False
        self.log_path = self.session_dir.parent / (
            self.session_dir.name + ".worker.log")

    # Process ------------------------------------------------------------------

    def start(self):
        """Spawn the worker with fd 3 on a socketpair and its output pipes
        on fds 4-7 (frame.h), and send Init."""
        self.session_dir.mkdir(parents=True, exist_ok=True)
        (self.session_dir / "tmp").mkdir(exist_ok=True)
        front, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        high = [fcntl.fcntl(child.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)]
        child.close()
        mine = []
        for _ in range(2):
            r, w = os.pipe()
            # The worker's read end is another open file, as the front's.
            theirs = os.open("/proc/self/fd/%d" % r, os.O_RDONLY | os.O_CLOEXEC)
            for fd in (w, theirs):  # write end, then read end
                high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
                os.close(fd)
            mine.append(r)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": str(self.session_dir),
               "TMPDIR": str(self.session_dir / "tmp")}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.wrap + [str(WORKER), "--log-level", self.log_level],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            cwd=str(self.session_dir), env=env, close_fds=False,
            preexec_fn=lambda: _child_fds(high))
        for fd in high:
            os.close(fd)
        self.pipes = mine
        for fd in self.pipes:
            os.set_blocking(fd, False)
        self.sock = front
        self.send_init()
        return self

    def send_init(self, **overrides):
        wpb = worker_pb2()
        init = wpb.Init(session_id="test-" + self.session_dir.name,
                        session_dir=str(self.session_dir),
                        parent_pid=self.parent_pid, log_level=3,
                        max_value_bytes=self.max_value_bytes,
                        grace_ms=2000, prefetch_items=0,
                        sys_path=self.sys_path)
        for k, v in overrides.items():
            if isinstance(v, (list, tuple)):
                getattr(init, k).extend(v)  # a repeated field
            else:
                setattr(init, k, v)
        self.send_frame(FRAME_CTL, wpb.WorkerControl(init=init)
                        .SerializeToString())

    def wait_exit(self, timeout=10.0):
        """The worker's exit status, waiting at most timeout seconds."""
        return self.proc.wait(timeout=timeout)

    def stop(self):
        """Tear down: kill the worker if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for fd in self.pipes:
            if fd != -1:
                os.close(fd)
        self.pipes = []
        if getattr(self, "log", None):
            self.log.close()

    def worker_log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # Frames -----------------------------------------------------------------

    def send_frame(self, ftype, payload):
        self.sock.sendall(struct.pack(">IB", len(payload) + 1, ftype)
                          + payload)

    def send(self, **fields):
        """Send one ClientMessage, e.g. send(pull=pb.Pull(...))."""
        self.send_frame(FRAME_MSG, pb.ClientMessage(**fields)
                        .SerializeToString())

    def _fill(self, need, deadline):
        while len(self.buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the worker in time; "
                                   "log:\n" + self.worker_log())
            pipes = [fd for fd in self.pipes if fd != -1] if self.eager_output else []
            r, _, _ = select.select([self.sock] + pipes, [], [], left)
            if not r:
                continue
            if self.sock not in r:
                self.read_output()
                continue
            data = self.sock.recv(1 << 20)
            if not data:
                self.eof = True
                self.read_output()  # what a dead worker left, as the front
                raise WorkerGone("the worker closed the socket")
            self.buf += data

    def read_output(self):
        """What the worker's stdout and stderr hold now, into self.outputs."""
        for stream, fd in enumerate(self.pipes):
            while fd != -1:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:  # every writer is gone: stop selecting it
                    os.close(fd)
                    self.pipes[stream] = fd = -1
                    break
                self.outputs.append((stream, data, 0))

    def read_frame(self, timeout=10.0):
        """(type, payload) of the next frame."""
        deadline = time.monotonic() + timeout
        self._fill(5, deadline)
        length, ftype = struct.unpack(">IB", self.buf[:5])
        assert length >= 1, "empty frame"
        assert length - 1 <= CHUNK + 64 * 1024, "frame over the limit"
        self._fill(4 + length, deadline)
        payload = bytes(self.buf[5:4 + length])
        del self.buf[:4 + length]
        return ftype, payload

    def read_one(self, timeout=10.0):
        """Read and route one frame; Output goes to self.outputs."""
        ftype, payload = self.read_frame(timeout)
        if ftype == FRAME_CTL:
            ctl = worker_pb2().WorkerControl.FromString(payload)
            if ctl.WhichOneof("msg") == "taken":  # once, as the Open arrives
                assert not self.taken, "Taken twice"
                self.taken = True
                return
            if ctl.WhichOneof("msg") == "flush":  # output before the answer
                self.flushes += 1
                self.read_output()
                return
            assert ctl.WhichOneof("msg") == "fatal", ctl
            self.fatal = ctl.fatal
            return
        assert ftype == FRAME_MSG, ftype
        self._route(pb.ServerMessage.FromString(payload))

    def _route(self, m):
        kind = m.WhichOneof("msg")
        if kind in ("result", "error"):
            self.answered.append(getattr(m, kind).call_id)
        if kind == "output":
            self.outputs.append((m.output.stream, m.output.data,
                                 m.output.dropped_bytes))
        elif kind == "ready":
            self.ready = m.ready
        elif kind == "result":
            self._carrier(m.result.call_id, Answer("result", m.result),
                          m.result.value if m.result.HasField("value")
                          else None)
        elif kind == "item":
            self._carrier(m.item.call_id, Answer("item", m.item), m.item.value)
        elif kind == "value":
            self._chunk(m.value)
        elif kind == "error":
            self.inbox[m.error.call_id].append(Answer("error", m.error))
        elif kind == "end":
            self.inbox[m.end.call_id].append(Answer("end", m.end))
        else:
            raise AssertionError("unexpected message %r" % kind)

    def _carrier(self, call_id, answer, value):
        assert call_id not in self.partial, "carrier inside a value"
        if value is None:
            self.inbox[call_id].append(answer)
            return
        assert value.seq == 0 and len(value.data) <= CHUNK
        answer.total_size = value.total_size
        answer.buffer_sizes = tuple(value.buffer_sizes)
        answer.chunks.append(len(value.data))
        if value.more:
            self.partial[call_id] = [answer, 1, bytearray(value.data)]
        else:
            answer.data = bytes(value.data)
            self.inbox[call_id].append(answer)

    def _chunk(self, v):
        answer, seq, data = self.partial[v.call_id]
        assert v.seq == seq, (v.seq, seq)
        assert len(v.data) <= CHUNK
        answer.chunks.append(len(v.data))
        data += v.data
        if v.more:
            self.partial[v.call_id][1] = seq + 1
            return
        del self.partial[v.call_id]
        answer.data = bytes(data)
        self.inbox[v.call_id].append(answer)

    def read_until(self, predicate, timeout=10.0):
        """Read frames until predicate() holds; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not met in time; log:\n"
                                   + self.worker_log())
            self.read_one(left)

    def drain(self, quiet=0.3):
        """Read whatever arrives until the worker is quiet for `quiet` s."""
        while not self.eof:
            try:
                self.read_one(quiet)
            except (TimeoutError, WorkerGone):
                return

    # Values -----------------------------------------------------------------

    def encode(self, value):
        if self.fmt == "json":
            return json.dumps(value).encode()
        return cloudpickle.dumps(value, protocol=5)

    def decode(self, data, sizes=()):
        """A value: JSON, or a pickle followed by out-of-band buffers of
        these sizes (an Answer's buffer_sizes)."""
        if self.fmt == "json":
            return json.loads(data)
        if not sizes:
            return pickle.loads(data)
        from remotemedia import _oob
        return _oob.loads(bytearray(data), sizes)

    def _chunks(self, data):
        return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]

    def _send_rest(self, call_id, chunks):
        for seq, chunk in enumerate(chunks[1:], start=1):
            self.send(value=pb.Value(call_id=call_id, seq=seq, data=chunk,
                                     more=seq < len(chunks) - 1))

    # Session ----------------------------------------------------------------

    def send_open(self, obj=None, *, data=None, python_version=PY_VERSION,
                  cloudpickle_version=cloudpickle.__version__, source="",
                  class_name="", init_args=None):
        """Send Open (the object chunked if large); no wait."""
        if data is None:
            data = cloudpickle.dumps(obj, protocol=5) if obj is not None \
                else b""
        chunks = self._chunks(data)
        fmt = pb.FORMAT_JSON if self.fmt == "json" else pb.FORMAT_PICKLE
        opn = pb.Open(protocol=pb.PROTOCOL_V1, format=fmt,
                      python_version=python_version,
                      cloudpickle_version=cloudpickle_version, source=source,
                      class_name=class_name,
                      init_args_json=json.dumps(init_args).encode()
                      if init_args is not None else b"")
        if data:
            opn.object.CopyFrom(pb.Value(call_id=0, seq=0, data=chunks[0],
                                         more=len(chunks) > 1,
                                         total_size=len(data)))
        self.send(open=opn)
        self._send_rest(0, chunks)

    def open(self, obj=None, timeout=20.0, **kw):
        """Open the session; the Ready message, or raise Fatal."""
        try:
            self.send_open(obj, **kw)
        except (BrokenPipeError, ConnectionResetError):
            # The worker failed before it read all of Open (a sandbox it
            # could not set up, say): its Fatal waits to be read.
            pass
        self.read_until(lambda: self.ready is not None or self.fatal,
                        timeout)
        if self.fatal is not None:
            raise Fatal(self.fatal)
        return self.ready

    def send_call(self, name, *args, kind=pb.CALL_METHOD, timeout_ms=0,
                  raw_args=None, total_size=None, buffer_sizes=(), **kwargs):
        """Send a Call (arguments chunked); its call id. total_size: the
        total the arguments announce (default: their length)."""
        call_id = self.next_id
        self.next_id += 1
        if raw_args is not None:
            data = raw_args
        elif kind == pb.CALL_GET:
            data = b""
        elif self.fmt == "json":
            data = json.dumps({"args": list(args), "kwargs": kwargs}).encode()
        else:
            data = cloudpickle.dumps((args, kwargs), protocol=5)
        chunks = self._chunks(data)
        call = pb.Call(call_id=call_id, name=name, kind=kind,
                       timeout_ms=timeout_ms)
        if data:
            call.args.CopyFrom(pb.Value(call_id=call_id, seq=0,
                                        data=chunks[0],
                                        more=len(chunks) > 1,
                                        total_size=len(data) if total_size is None
                                        else total_size,
                                        buffer_sizes=buffer_sizes))
        self.send(call=call)
        self._send_rest(call_id, chunks)
        return call_id

    def answer(self, call_id, timeout=10.0):
        """The next reassembled answer for call_id."""
        box = self.inbox[call_id]
        self.read_until(lambda: len(box) > 0, timeout)
        return box.popleft()

    def result(self, call_id, timeout=10.0):
        """The decoded result of call_id, or raise RemoteError."""
        a = self.answer(call_id, timeout)
        if a.kind == "error":
            raise RemoteError(a.msg)
        assert a.kind == "result" and not a.msg.generator, a
        return self.decode(a.data, a.buffer_sizes)

    def call_value(self, name, *args, timeout=10.0, **kwargs):
        return self.result(self.send_call(name, *args, **kwargs), timeout)

    def get(self, name, timeout=10.0):
        return self.result(self.send_call(name, kind=pb.CALL_GET), timeout)

    def error(self, call_id, timeout=10.0):
        """The Error answer of call_id (asserts it is one)."""
        a = self.answer(call_id, timeout)
        assert a.kind == "error", a
        return a.msg

    def start_generator(self, name, *args, **kwargs):
        """Call a generator method; its call id once Result{generator}."""
        call_id = self.send_call(name, *args, **kwargs)
        a = self.answer(call_id)
        if a.kind == "error":
            raise RemoteError(a.msg)
        assert a.kind == "result" and a.msg.generator, a
        assert not a.msg.HasField("value")
        return call_id

    def pull(self, call_id, n, timeout_ms=0):
        self.send(pull=pb.Pull(call_id=call_id, n=n, timeout_ms=timeout_ms))

    def cancel(self, call_id):
        self.send(cancel=pb.Cancel(call_id=call_id))

    def expired(self, call_id):
        """The front's word that call_id's deadline passed."""
        wpb = worker_pb2()
        ctl = wpb.WorkerControl(expired=wpb.Expired(call_id=call_id))
        self.send_frame(FRAME_CTL, ctl.SerializeToString())

    def close(self):
        self.send(close=pb.Close())

    def items(self, call_id, n, timeout=10.0):
        """The next n answers of a generator, decoded where items."""
        out = []
        for _ in range(n):
            a = self.answer(call_id, timeout)
            if a.kind == "item":
                out.append(self.decode(a.data, a.buffer_sizes))
            else:
                out.append(a)
        return out

    def output_text(self, stream=None):
        """All Output data so far, decoded, optionally of one stream."""
        return b"".join(d for s, d, _ in self.outputs
                        if stream is None or s == stream).decode(
                            errors="replace")
