#!/usr/bin/python3
"""A hostile stand-in for remotemedia-worker, for tests/integration/test_hostile.py.

The front starts it as `--worker PATH` (with `--sandbox off`) exactly as it
starts the real worker: the session's socketpair on fd 3, /dev/null on 0, a
scrubbed environment. The environment cannot carry a mode, so the mode is the
part of this program's own name after "fake_worker_": the tests make symlinks
such as fake_worker_garbage -> fake_worker.py and point --worker at them.

Modes (what the worker does after reading Init and Open):
  exit            exits with status 3 at once, before reading anything
  fatal_at_init   a Fatal right after Init, as a worker whose sandbox
                  failed says so (before any Open: a spare's way to fail)
  garbage         a well-framed message whose payload is not protobuf
  badtype         a frame of an unknown type (9)
  oversize        a frame header announcing 2^31 bytes
  early_result    a Result before Ready
  result_unknown  Ready, then a Result for call 42, which was never made
  item_unknown    Ready, then an Item for call 7, which was never made
  ready_twice     Ready, and Ready again
  ready_exit0     Ready, then exits with status 0 unasked
  two_members     one message holding both a Ready and an Output, which
                  protobuf parsers read differently
  bad_utf8        Ready, then an Error whose type is not UTF-8
  output_socket   Ready, then an Output on its socket, round the front's
                  rate cap (the front reads the output pipes)
  flush_flood     Ready, then 200,000 Flush frames, then a Result for
                  call 42, which was never made
  silent          Ready, then nothing at all: it neither reads nor answers
  hang_up         Ready, then closes its socket and stays
  deaf_to_close   Ready, then reads on (Close among it) and stays

Frames: a 4-byte big-endian length of what follows, a type byte (1: a
ServerMessage, 2: a WorkerControl), the payload. Every wait is bounded: the
worker exits by itself after LINGER seconds if nobody kills it.
"""
import os
import socket
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

FRAME_MSG = 1
FRAME_CTL = 2
LINGER = 60.0


def log(msg):
    sys.stderr.write("fake_worker[%d]: %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError("the front closed the socket")
        buf += part
    return buf


def read_frame(sock):
    (length,) = struct.unpack(">I", read_exact(sock, 4))
    body = read_exact(sock, length)
    return body[0], body[1:]


def frame(ftype, payload):
    return struct.pack(">IB", len(payload) + 1, ftype) + payload


def msg(sm):
    return frame(FRAME_MSG, sm.SerializeToString())


def ready(pb):
    return msg(pb.ServerMessage(ready=pb.Ready(
        session_id="fake", python_version="%d.%d" % sys.version_info[:2],
        cloudpickle_version="0", protocol=pb.PROTOCOL_V1,
        attributes={"work": pb.ATTR_METHOD},
        limits=pb.Limits(max_chunk_bytes=1 << 20, max_value_bytes=64 << 20))))


def linger(sock, read):
    """Wait to be killed; with read, drain what the front sends meanwhile."""
    deadline = time.monotonic() + LINGER
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        if not read:
            time.sleep(1.0)
            continue
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def main():
    name = os.path.basename(sys.argv[0])
    mode = name.split("fake_worker_", 1)[1] if "fake_worker_" in name else ""
    log("mode %r" % mode)
    if mode == "exit":
        sys.exit(3)
    from remotemedia._proto import remotemedia_pb2 as pb

    sock = socket.socket(fileno=3)
    sock.settimeout(LINGER)
    ftype, _ = read_frame(sock)
    assert ftype == FRAME_CTL, "Init first"
    if mode == "fatal_at_init":
        # WorkerControl{fatal (2): Fatal{code (1): 13, message (2)}}, by hand.
        text = b"sandbox: bind /usr: test failure"
        fatal = b"\x08\x0d\x12" + bytes([len(text)]) + text
        sock.sendall(frame(FRAME_CTL, b"\x12" + bytes([len(fatal)]) + fatal))
        linger(sock, read=True)
        return 1
    ftype, _ = read_frame(sock)
    assert ftype == FRAME_MSG, "then Open"

    if mode == "garbage":
        sock.sendall(frame(FRAME_MSG, b"\xff\xff\xff\xff\x0f garbage"))
    elif mode == "badtype":
        sock.sendall(frame(9, b"\x00" * 16))
    elif mode == "oversize":
        sock.sendall(struct.pack(">IB", 1 << 31, FRAME_MSG) + b"\x00" * 64)
    elif mode == "early_result":
        sock.sendall(msg(pb.ServerMessage(result=pb.Result(call_id=1))))
    elif mode == "result_unknown":
        sock.sendall(ready(pb) + msg(pb.ServerMessage(result=pb.Result(
            call_id=42, value=pb.Value(call_id=42, data=b"surprise")))))
    elif mode == "item_unknown":
        sock.sendall(ready(pb) + msg(pb.ServerMessage(item=pb.Item(
            call_id=7, index=0, value=pb.Value(call_id=7, data=b"surprise")))))
    elif mode == "ready_twice":
        sock.sendall(ready(pb) + ready(pb))
    elif mode == "two_members":
        both = (pb.ServerMessage(ready=pb.Ready(session_id="x")).SerializeToString()
                + pb.ServerMessage(output=pb.Output(data=b"o")).SerializeToString())
        sock.sendall(frame(FRAME_MSG, both))
    elif mode == "output_socket":
        sock.sendall(ready(pb) + msg(pb.ServerMessage(output=pb.Output(data=b"o"))))
    elif mode == "flush_flood":
        flush = frame(FRAME_CTL, b"\x2a\x00")  # WorkerControl{flush: {}}
        sock.sendall(ready(pb) + flush * 200000 + msg(pb.ServerMessage(
            result=pb.Result(call_id=42))))
    elif mode == "bad_utf8":
        sock.sendall(ready(pb) + frame(FRAME_MSG, b"\x22\x04\x12\x02\xc3\x28"))
    elif mode == "ready_exit0":
        sock.sendall(ready(pb))
        return 0
    elif mode == "silent":
        sock.sendall(ready(pb))
        linger(sock, read=False)
        return 0
    elif mode == "hang_up":
        sock.sendall(ready(pb))
        sock.close()
        time.sleep(LINGER)
        return 0
    elif mode == "deaf_to_close":
        sock.sendall(ready(pb))
    else:
        log("unknown mode; exiting")
        return 4
    linger(sock, read=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
