#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets under tests/fuzz/corpus/.

Run it from anywhere; it (re)writes the files it owns and leaves any other
file in the corpus directories alone. The HTTP/2 seeds are built with
python3-h2, with HPACK literals left uncompressed so that the fuzzer's
mutations and dictionary can reach the header values. Protobuf messages are
encoded by hand here (the few fields the seeds need), so that no generated
code is needed.
"""

import os
import sys

import h2.config
import h2.connection

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

PATH_SESSION = b"/remotemedia.v1.RemoteExecution/Session"
PATH_ECHO = b"/remotemedia.v1.RemoteExecution/Echo"
PATH_HEALTH = b"/grpc.health.v1.Health/Check"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAME_MSG = 1
FRAME_CTL = 2


# ---- protobuf, by hand ----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(num, v):
    """A varint field; zero is left out, as proto3 does."""
    return varint(num << 3) + varint(v) if v else b""


def fb(num, b, always=False):
    """A length-delimited field (bytes, string or message)."""
    if isinstance(b, str):
        b = b.encode()
    if not b and not always:
        return b""
    return varint(num << 3 | 2) + varint(len(b)) + b


def value(call_id=0, seq=0, more=False, data=b"data"):
    return fv(1, call_id) + fv(2, seq) + fv(3, int(more)) + fb(4, data)


def open_msg(obj=b"\x80\x05pickled-object.", more=False, reqs=(), source=""):
    body = fv(1, 1) + fb(3, value(data=obj, more=more))
    for r in reqs:
        body += fb(4, r, always=True)
    body += fb(5, "3.11") + fb(7, source)
    return fb(1, body, always=True)


def call(call_id, name="m", args=True, more=False, timeout_ms=0):
    body = fv(1, call_id) + fb(2, name)
    if args:
        body += fb(4, value(call_id=call_id, more=more, data=b"args"))
    body += fv(5, timeout_ms)
    return fb(2, body, always=True)


def pull(call_id, n, timeout_ms=0):
    return fb(3, fv(1, call_id) + fv(2, n) + fv(3, timeout_ms), always=True)


def cancel(call_id):
    return fb(4, fv(1, call_id), always=True)


def close():
    return fb(5, b"", always=True)


def cvalue(call_id, seq, more=False):
    return fb(6, value(call_id=call_id, seq=seq, more=more), always=True)


def s_progress(line="Collecting numpy"):
    return fb(1, fv(1, 5) + fb(4, line), always=True)


def s_ready():
    return fb(2, fb(1, "0" * 32) + fb(2, "3.11") + fv(7, 1), always=True)


def s_result(call_id, generator=False, more=False, with_value=True):
    body = fv(1, call_id)
    if with_value and not generator:
        body += fb(2, value(call_id=call_id, more=more, data=b"result"))
    body += fv(3, int(generator))
    return fb(3, body, always=True)


def s_error(call_id, message="boom"):
    body = fv(1, call_id) + fb(2, "ValueError") + fb(5, message)
    return fb(4, body, always=True)


def s_output(data=b"printed\n", stream=0):
    return fb(5, fv(1, stream) + fb(2, data), always=True)


def s_item(call_id, index, more=False):
    body = fv(1, call_id) + fv(2, index)
    body += fb(3, value(call_id=call_id, more=more, data=b"item"))
    return fb(6, body, always=True)


def s_end(call_id, cancelled=False):
    return fb(7, fv(1, call_id) + fv(2, int(cancelled)), always=True)


def s_value(call_id, seq, more=False):
    return fb(8, value(call_id=call_id, seq=seq, more=more), always=True)


def w_fatal(code, message):
    return fb(2, fv(1, code) + fb(2, message), always=True)


def w_init():
    return fb(1, fb(1, "0" * 32) + fb(2, "/tmp/s"), always=True)


# ---- fuzz_deframe: config byte, refused message, stream ----

def grpc_frame(msg, flag=0):
    return bytes([flag]) + len(msg).to_bytes(4, "big") + msg


def worker_frame(msg, ftype=FRAME_MSG):
    return (len(msg) + 1).to_bytes(4, "big") + bytes([ftype]) + msg


def deframe_seeds():
    two = grpc_frame(b"hello") + grpc_frame(b"") + grpc_frame(b"x" * 40)
    wk = worker_frame(b"abc") + worker_frame(b"", FRAME_CTL) + \
        worker_frame(b"y" * 100)
    # cfg: bit 0 worker kind, bit 1 compression, bits 2-3 limit, 4-7 split.
    return {
        "grpc_whole": bytes([0x08, 0xFF]) + two,
        "grpc_bytewise": bytes([0x18, 0xFF]) + two,
        "grpc_random": bytes([0x78, 0xFF]) + two + grpc_frame(b"z" * 7)[:8],
        "grpc_compressed_ok": bytes([0x3A, 0xFF]) + grpc_frame(b"c", 1),
        "grpc_compressed_refused": bytes([0x38, 0xFF]) + grpc_frame(b"c", 1),
        "grpc_bad_flag": bytes([0x28, 0xFF]) + grpc_frame(b"a") +
        grpc_frame(b"b", 7),
        "grpc_too_big": bytes([0x44, 0xFF]) + grpc_frame(b"12345678"),
        "grpc_refuse_second": bytes([0x58, 0x01]) + two,
        "grpc_zero_limit": bytes([0x90, 0xFF]) + grpc_frame(b"") * 3,
        "grpc_partial_tail": bytes([0xA8, 0xFF]) + two +
        bytes([0, 0, 0, 1, 0]) + b"partial",
        "worker_whole": bytes([0x09, 0xFF]) + wk,
        "worker_random": bytes([0xB9, 0xFF]) + wk,
        "worker_big_limit": bytes([0xCD, 0xFF]) + worker_frame(b"q" * 300),
        "worker_bad_type": bytes([0x19, 0xFF]) + worker_frame(b"a", 3),
        "worker_zero_length": bytes([0x29, 0xFF]) + bytes(5),
        "worker_too_big": bytes([0x05, 0xFF]) + worker_frame(b"12345678"),
        "worker_refuse_first": bytes([0x39, 0x00]) + wk,
    }


# ---- fuzz_req: one requirement, or a list split at '\n' ----

def req_seeds():
    one = [
        "numpy", "pandas>=1.3.0", "qrcode[pil]", "requests[socks]",
        "Django==4.2.*", "pkg~=1.4.2", "pkg (>=1.0)",
        "pkg; python_version >= \"3.8\"", "pkg[B_c , a, A]",
        "pkg ( >= 1.0 , != 1.5.* )", "pkg===1.0+Local",
        "pkg==1!2.0.post1.dev2",
        "pkg>=1.0; (os_name=='posix' or os_name == \"nt\") and "
        "extra == 'test'",
        "pkg; 'linux' in sys_platform and platform_machine not  in "
        "'arm64 aarch64'",
        "pkg; platform_release == 'say \"hi\"'",
        "Foo__Bar..baz-_.qux", "  numpy  ",
        "-e .", "pkg @ https://example.com/pkg.whl", "git+https://x/y",
        "./local", "pkg; os_name == posix", "pkg>=", "pkg[a",
        "pkg; ((((os_name == 'a'))))", "pkg==1.*.2", "pkg~=1",
    ]
    seeds = {"one_%02d" % i: s.encode() for i, s in enumerate(one)}
    seeds["list_ok"] = b"numpy\npandas>=1.3\nNumPy\nrequests[socks]"
    seeds["list_bad_second"] = b"numpy\n--index-url=http://evil\nscipy"
    seeds["list_empty_line"] = b"numpy\n\nscipy"
    seeds["nul_inside"] = b"num\x00py"
    seeds["long_name"] = b"a" * 101
    return seeds


# ---- fuzz_worker_frames: a program of operations ----

OP_WORKER, OP_WORKER2, OP_WORKER_BIG, OP_CALL, OP_PULL, OP_CLIENT, \
    OP_EVENT, OP_EXIT = range(8)
NAME_EMPTY, NAME_M, NAME_GEN, NAME_ATTR = (0x00, 0x40, 0x80, 0xC0)


def op_worker(data):
    out = b""
    while data:
        chunk, data = data[:256], data[256:]
        out += bytes([OP_WORKER, len(chunk) - 1]) + chunk
    return out


def op_wmsg(msg, ftype=FRAME_MSG):
    return op_worker(worker_frame(msg, ftype))


def op_call(call_id, name=NAME_M, args=True, more=False, timeout=False):
    flags = name | int(args) | (2 if more else 0) | (8 if timeout else 0)
    return bytes([OP_CALL, call_id, flags])


def op_pull(call_id, n, timeout=0):
    return bytes([OP_PULL, call_id, n, timeout])


def op_cancel(call_id):
    return bytes([OP_CLIENT, 0, call_id])


def op_cvalue(call_id, seq, more=False):
    return bytes([OP_CLIENT, 1, call_id, 4 | (2 if more else 0) | seq << 4])


def op_close():
    return bytes([OP_CLIENT, 2])


def op_raw(msg):
    return bytes([OP_CLIENT, 4, len(msg)]) + msg


def op_event(kind):
    return bytes([OP_EVENT, kind])


def op_exit(status=0x80):
    return bytes([OP_EXIT, status])


def worker_seeds():
    plain = 0
    seeds = {
        "result": op_call(1) + op_wmsg(s_result(1)) + op_exit(9),
        "generator": op_call(1, NAME_GEN) +
        op_wmsg(s_result(1, generator=True)) + op_pull(1, 3) +
        op_wmsg(s_item(1, 0)) + op_wmsg(s_item(1, 1)) + op_wmsg(s_end(1)) +
        op_close() + op_exit(0x80),
        "generator_chunked_item": op_call(1, NAME_GEN) +
        op_wmsg(s_result(1, generator=True)) + op_pull(1, 2) +
        op_wmsg(s_item(1, 0, more=True)) + op_wmsg(s_value(1, 1)) +
        op_wmsg(s_item(1, 1)) + op_cancel(1) +
        op_wmsg(s_end(1, cancelled=True)),
        "chunked_result": op_call(1) + op_wmsg(s_result(1, more=True)) +
        op_wmsg(s_value(1, 1, more=True)) + op_wmsg(s_value(1, 2)),
        "chunked_result_wrong_seq": op_call(1) +
        op_wmsg(s_result(1, more=True)) + op_wmsg(s_value(1, 2)),
        "error": op_call(1) + op_call(2) + op_wmsg(s_error(1)) +
        op_wmsg(s_error(0)) + op_wmsg(s_result(2)),
        "interleaved": op_call(1) + op_call(2, NAME_GEN) + op_call(3) +
        op_wmsg(s_result(2, generator=True)) + op_pull(2, 1) +
        op_wmsg(s_result(3)) + op_wmsg(s_item(2, 0)) +
        op_wmsg(s_result(1)) + op_pull(2, 255) + op_wmsg(s_end(2)),
        # An Output on the socket is a violation: the front reads the
        # output pipes itself. Flush (2 bytes) is what the worker sends.
        "output_progress": op_wmsg(s_output()) + op_wmsg(s_progress()),
        "flush": op_wmsg(b"\x2a\x00", FRAME_CTL) + op_call(1) +
        op_wmsg(b"\x2a\x00", FRAME_CTL) + op_wmsg(s_result(1)),
        "unknown_call": op_wmsg(s_result(7)) + op_exit(0x81),
        "item_without_credit": op_call(1, NAME_GEN) +
        op_wmsg(s_result(1, generator=True)) + op_wmsg(s_item(1, 0)),
        "fatal": op_wmsg(w_fatal(8, "memory limit"), FRAME_CTL),
        "fatal_bad_code": op_wmsg(w_fatal(0, "ok?"), FRAME_CTL) +
        op_exit(24),
        "control_init": op_wmsg(w_init(), FRAME_CTL),
        "bad_type": op_worker(worker_frame(b"\x2a\x00", 3)),
        "too_big": op_worker(bytes([0x7F, 0xFF, 0xFF, 0xFF, 1])),
        "empty_frame": op_worker(bytes([0, 0, 0, 1, FRAME_MSG])),
        "split_frame": op_call(1) + (lambda f: op_worker(f[:3]) +
                                     op_worker(f[3:]))(
            worker_frame(s_result(1))),
        "backpressure": op_event(2) + op_call(2) + op_wmsg(s_result(2)) +
        op_event(3) + op_call(1, timeout=True) + op_event(2) +
        op_call(3) + op_wmsg(s_result(3)) + op_event(3),
        "client_gone": op_call(1) + op_event(4) + op_wmsg(s_result(1)) +
        op_wmsg(s_progress()),
        "half_close": op_call(1) + op_event(0) + op_wmsg(s_result(1)) +
        op_event(1) + op_exit(0x80),
        "kill_all": op_call(1) + op_event(5) + op_wmsg(s_result(1)),
        "args_chunked": op_call(1, more=True) + op_cvalue(1, 1, more=True) +
        op_cvalue(1, 2) + op_wmsg(s_result(1)),
        "args_wrong_seq": op_call(1, more=True) + op_cvalue(1, 3),
        "call_ids": op_call(2) + op_call(1) + op_call(255) + op_pull(9, 1) +
        op_cancel(0),
        "no_name": op_call(1, NAME_EMPTY),
        "raw_client": op_raw(call(1, "m")) + op_raw(b"\xff\xff") +
        op_wmsg(s_result(1)),
        "open_twice": bytes([OP_CLIENT, 3]),
        "ready_twice": op_wmsg(s_ready()),
        "deadline": op_call(1, timeout=True) + op_call(2, NAME_GEN) +
        op_wmsg(s_result(2, generator=True)) + op_pull(2, 1, 1) +
        op_event(7),
        "drain": op_call(1) + op_event(6) + op_wmsg(s_result(1)) +
        op_exit(0x80),
        "big_frame": bytes([OP_WORKER_BIG, 1, 5]) +
        worker_frame(s_output(b"o" * 250))[:261],
    }
    out = {"wf_" + k: bytes([plain]) + v for k, v in seeds.items()}
    # Open with a chunked object: its continuation chunks while READY.
    out["wf_open_chunked"] = bytes([1]) + op_cvalue(0, 1, more=True) + \
        op_cvalue(0, 2) + op_cvalue(0, 3)
    return out


# ---- fuzz_front_h2: HTTP/2 after the client preface ----

class Client:
    """An h2 client connection whose bytes are collected, not sent."""

    def __init__(self):
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False)
        self.c = h2.connection.H2Connection(config=cfg)
        # Literal header values stay readable for the fuzzer.
        enc = self.c.encoder
        plain = enc.encode
        enc.encode = lambda headers, huffman=True: plain(headers, False)
        self.c.initiate_connection()
        self.out = b""
        self.flush()

    def flush(self):
        self.out += self.c.data_to_send()

    def request(self, sid, path, ct=b"application/grpc", method=b"POST",
                extra=(), end=False):
        hdrs = [(b":method", method), (b":scheme", b"http"),
                (b":path", path), (b":authority", b"fuzz"),
                (b"content-type", ct), (b"te", b"trailers")]
        self.c.send_headers(sid, hdrs + list(extra), end_stream=end)
        self.flush()

    def data(self, sid, payload, end=False):
        self.c.send_data(sid, payload, end_stream=end)
        self.flush()

    def grpc(self, sid, msgs, end=True, split=None):
        """Send gRPC messages, one DATA frame each or frames of split bytes.

        The harness turns its loop after each frame, so that the fake
        worker's Ready comes before a Call in the next frame.
        """
        if split is None:
            for i, m in enumerate(msgs):
                self.data(sid, grpc_frame(m), end and i == len(msgs) - 1)
            return
        body = b"".join(grpc_frame(m) for m in msgs)
        for i in range(0, len(body), split):
            self.data(sid, body[i:i + split],
                      end and i + split >= len(body))

    def bytes(self):
        assert self.out.startswith(PREFACE)
        return self.out[len(PREFACE):]


def session(msgs, extra=(), end=True, split=None):
    c = Client()
    c.request(1, PATH_SESSION, extra=extra)
    c.grpc(1, msgs, end=end, split=split)
    return c


def h2_seeds():
    seeds = {}
    c = Client()
    c.request(1, PATH_ECHO)
    c.grpc(1, [fb(1, b"hello")])
    seeds["echo"] = c

    c = Client()
    c.request(1, PATH_ECHO)
    c.grpc(1, [fb(1, b"one"), fb(1, b"two" * 20), b""], split=7)
    seeds["echo_split"] = c

    c = Client()
    c.request(1, PATH_HEALTH)
    c.grpc(1, [b""])
    seeds["health"] = c

    c = Client()
    c.request(1, PATH_HEALTH)
    c.grpc(1, [fb(1, "remotemedia.v1.RemoteExecution")])
    c.request(3, PATH_HEALTH)
    c.grpc(3, [fb(1, "other.Service")])
    c.request(5, PATH_HEALTH, end=True)
    seeds["health_services"] = c

    # The Admin service: Info, ListSessions (beside a session) and
    # EndSession of an unknown id and of the session itself.
    c = Client()
    c.request(1, b"/remotemedia.v1.Admin/Info")
    c.grpc(1, [b""])
    c.request(3, b"/remotemedia.v1.Admin/ListSessions")
    c.grpc(3, [b""])
    c.request(5, b"/remotemedia.v1.Admin/EndSession")
    c.grpc(5, [fb(1, "0" * 32)])
    c.request(7, b"/remotemedia.v1.Admin/EndSession", end=True)
    seeds["admin"] = c

    seeds["session_open_close"] = session([open_msg(), close()])
    seeds["session_open_halfclose"] = session([open_msg()])
    seeds["session_calls"] = session(
        [open_msg(), call(1, "m"), call(2, "gen"), pull(2, 5),
         call(3, "big"), call(4, "err"), call(5, "gen"), pull(5, 1),
         cancel(5), close()])
    seeds["session_chunked"] = session(
        [open_msg(more=True), cvalue(0, 1), call(1, "m", more=True),
         cvalue(1, 1, more=True), cvalue(1, 2), close()], split=9)
    seeds["session_reqs"] = session(
        [open_msg(reqs=["numpy>=1.0", "Requests[security] ; "
                        "python_version >= '3.8'"]), call(1, "m"),
         close()])
    seeds["session_reqs_bad"] = session(
        [open_msg(reqs=["numpy", "-e ."])])
    seeds["session_reqs_nul"] = session(
        [open_msg(reqs=["num\x00py"])])
    seeds["session_reqs_slow"] = session(
        [open_msg(reqs=["slowpkg"], more=True), cvalue(0, 1), close()])
    seeds["session_reqs_broken"] = session(
        [open_msg(reqs=["brokenpkg==1.0"])])
    seeds["session_source"] = session(
        [open_msg(obj=b"", source="class Echo:\n    pass\n"), close()])
    seeds["session_first_not_open"] = session([call(1, "m")])
    seeds["session_timeout"] = session(
        [open_msg(), call(1, "m", timeout_ms=1)],
        extra=[(b"grpc-timeout", b"1m")], end=False)
    seeds["session_bad_protocol"] = session(
        [fb(1, fv(1, 7) + fb(3, value()), always=True)])

    c = session([open_msg(), call(1, "gen")], end=False)
    c.c.reset_stream(1)
    c.flush()
    seeds["session_reset"] = c

    c = session([open_msg()], end=False)
    c.data(1, grpc_frame(b"\x2a\x00")[:3], end=True)
    seeds["session_ends_inside_message"] = c

    c = Client()
    c.request(1, PATH_ECHO)
    c.data(1, bytes([1, 0, 0, 0, 1, 0]), end=True)
    seeds["echo_compressed"] = c

    c = Client()
    c.request(1, PATH_ECHO)
    c.data(1, bytes([0]) + (5 << 20).to_bytes(4, "big") + b"x", end=True)
    seeds["echo_too_big"] = c

    c = Client()
    c.request(1, PATH_ECHO, ct=b"text/plain", end=True)
    c.request(3, PATH_ECHO, method=b"GET", end=True)
    c.request(5, b"/no.Such/Method", end=True)
    c.request(7, PATH_ECHO, ct=b"application/grpc+proto",
              extra=[(b"authorization", b"Bearer abcdefghijklmnop"),
                     (b"grpc-timeout", b"99999999H")])
    c.grpc(7, [fb(1, b"x")])
    seeds["headers_mixed"] = c

    c = Client()
    c.request(1, PATH_ECHO)
    c.request(3, PATH_SESSION)
    c.grpc(3, [open_msg()], end=False)
    c.grpc(1, [fb(1, b"interleaved")])
    c.c.ping(b"12345678")
    c.c.increment_flow_control_window(1 << 20)
    c.grpc(3, [call(1, "m"), close()])
    c.flush()
    seeds["two_streams_ping"] = c

    c = session([open_msg(), call(1, "gen")], end=False)
    c.c.close_connection()
    c.flush()
    seeds["session_goaway"] = c

    # The harness drains the front, as on SIGTERM, at this PING.
    c = Client()
    c.request(1, PATH_SESSION)
    c.grpc(1, [open_msg(), call(1, "gen"), pull(1, 1)], end=False)
    c.request(3, PATH_SESSION)
    c.grpc(3, [open_msg()], end=False)
    c.c.ping(b"SIGTERM!")
    c.flush()
    c.grpc(1, [pull(1, 5)], end=False)
    c.request(5, PATH_HEALTH)
    c.grpc(5, [b""])
    seeds["sigterm_drain"] = c

    # Time passes at this PING: every timer fires.
    c = session([open_msg(), call(1, "gen", timeout_ms=5), pull(1, 1)],
                extra=[(b"grpc-timeout", b"2S")], end=False)
    c.request(3, PATH_ECHO, extra=[(b"grpc-timeout", b"1S")])
    c.c.ping(b"TIMEOUT!")
    c.flush()
    seeds["timers"] = c

    c = Client()
    c.c.ping(b"TIMEOUT!")
    c.flush()
    seeds["idle_conn"] = c

    # Installing sessions: the build reports, then ends well or not.
    c = Client()
    c.request(1, PATH_SESSION)
    c.grpc(1, [open_msg(reqs=["slowpkg"], more=True), cvalue(0, 1)],
           end=False)
    c.request(3, PATH_SESSION)
    c.grpc(3, [open_msg(reqs=["slowpkg[x]>=1"])], end=False)
    c.c.ping(b"PROGRESS")
    c.flush()
    c.c.ping(b"ENVREADY")
    c.flush()
    c.grpc(1, [call(1, "m"), close()])
    seeds["env_ready"] = c

    c = session([open_msg(reqs=["slowpkg"])], end=False)
    c.c.ping(b"PROGRESS")
    c.flush()
    c.c.ping(b"ENVFAIL!")
    c.flush()
    seeds["env_fail"] = c

    # More sessions than --max-sessions (4 in the harness).
    c = Client()
    for sid in range(1, 12, 2):
        c.request(sid, PATH_SESSION)
        c.grpc(sid, [open_msg()], end=False)
    seeds["too_many_sessions"] = c
    return {"h2_" + k: v.bytes() for k, v in seeds.items()}


def envelope_seeds():
    """Whole ServerMessages and ClientMessages, one a file."""
    ready = fb(2, fb(1, "0" * 32) + fb(2, "3.11") + fb(4, "numpy==1.24")
               + fb(5, fv(1, 4 << 20) + fv(4, 100)) + fb(6, fb(1, "ping") + fv(2, 1))
               + fv(7, 1), always=True)
    return {
        "progress": s_progress(), "ready": ready, "result": s_result(3),
        "result_more": s_result(3, more=True), "generator": s_result(4, generator=True),
        "error": s_error(5, "d\u00e9j\u00e0 vu"), "output": s_output(),
        "item": s_item(4, 0, more=True), "end": s_end(4, True), "svalue": s_value(3, 1),
        "open": open_msg(), "call": call(7, "method", timeout_ms=250),
        "call_chunked": call(8, more=True), "pull": pull(4, 16, 1000),
        "cancel": cancel(4), "close": close(), "cvalue": cvalue(8, 1, more=True),
        "two_members": s_end(4) + s_result(3),
        "merged_value": s_item(4, 0, more=True) + s_item(4, 1),
    }


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    assert len(seeds) <= 50, target
    for name, data in sorted(seeds.items()):
        assert len(data) <= 64 * 1024, name
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("%s: %d seeds" % (target, len(seeds)))


def main():
    write("fuzz_deframe", deframe_seeds())
    write("fuzz_req", req_seeds())
    write("fuzz_worker_frames", worker_seeds())
    write("fuzz_front_h2", h2_seeds())
    write("fuzz_envelope", envelope_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
