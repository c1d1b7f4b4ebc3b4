"""rmctl info, sessions, kill and run against a real server; --token (and
REMOTEMEDIA_TOKEN), --tls and --ca; options before or after the command;
exit codes that follow gRPC status codes; the Admin service's rule that an
admin token sees every session and another token only its own.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_rmctl_admin.py
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess

import grpc
import pytest

from clientlib import run
from remotemedia.core.exceptions import WorkerDiedError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, ROOT
from targets import Ping

RMCTL = str(BUILD / "rmctl")
ADMIN, ALICE, BOB = "admin-secret-0123456789", "alice-secret-0123456789", "bob-secret-0123456789"

# gRPC status codes, as rmctl exits with them.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 3, 4, 5
UNAVAILABLE, UNAUTHENTICATED = 14, 16


def rmctl(*args: str, env: dict | None = None, timeout: float = 120.0):
    e = {k: v for k, v in os.environ.items() if k != "REMOTEMEDIA_TOKEN"}
    e.update(env or {})
    return subprocess.run([RMCTL, *args], capture_output=True, text=True,
                           timeout=timeout, env=e)


def at(srv) -> list[str]:
    return ["--host", srv.host, "--port", str(srv.port)]


@pytest.fixture
def token_server(fresh_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin:{ADMIN}:admin\nalice:{ALICE}\nbob:{BOB}\n")
    tokens.chmod(0o600)
    return fresh_server(["--token-file", str(tokens), "--session-pool", "0"])


def test_info_reports_version_limits_and_sandbox(server):
    r = rmctl("info", *at(server))
    assert r.returncode == 0, r.stderr
    assert "version         0.1.0" in r.stdout
    assert "max-sessions" in r.stdout and "max-streams" in r.stdout
    j = rmctl(*at(server), "info", "--json")  # options before the command
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert doc["limits"]["max-sessions"] == "1000"
    assert doc["limits"]["session-network"] == "isolated"
    assert doc["python"] == "3.11"
    if os.geteuid() == 0 and "off" not in os.environ.get("RM_SERVER_ARGS", ""):
        joined = "\n".join(doc["sandbox"])
        for word in ("namespaces:", "landlock", "seccomp", "uids:", "rlimits:"):
            assert word in joined, joined


def test_sessions_and_kill_follow_the_token_rules(token_server):
    srv = token_server

    async def main():
        async with RemoteProxyClient(srv.config(auth_token=ALICE)) as ca, \
                RemoteProxyClient(srv.config(auth_token=BOB)) as cb:
            a = await ca.create_proxy(Ping())
            b = await cb.create_proxy(Ping())
            loop = asyncio.get_running_loop()

            def cli(*args, **kw):
                return loop.run_in_executor(None, lambda: rmctl(*args, **kw))

            # No token, a wrong one: UNAUTHENTICATED.
            r = await cli("sessions", *at(srv))
            assert r.returncode == UNAUTHENTICATED, r.stderr
            r = await cli("sessions", *at(srv), "--token", "nope")
            assert r.returncode == UNAUTHENTICATED and "invalid token" in r.stderr
            # Alice sees her own session only; the admin sees both.
            r = await cli("sessions", *at(srv), "--json", "--token", ALICE)
            assert r.returncode == 0, r.stderr
            mine = [json.loads(line) for line in r.stdout.splitlines()]
            assert [s["owner"] for s in mine] == ["alice"]
            r = await cli("--token", ADMIN, "sessions", *at(srv), "--json")
            every = {json.loads(line)["owner"]: json.loads(line) for line in r.stdout.splitlines()}
            assert set(every) == {"alice", "bob"}
            assert every["bob"]["state"] == "ready" and every["bob"]["pid"] > 0
            bob_id = every["bob"]["session_id"]
            # Alice cannot end Bob's session: to her it does not exist.
            r = await cli("kill", bob_id, *at(srv), env={"REMOTEMEDIA_TOKEN": ALICE})
            assert r.returncode == NOT_FOUND, r.stderr
            assert await b.ping() == "pong"
            # The admin can; Bob's client learns who ended it.
            r = await cli("kill", bob_id, *at(srv), env={"REMOTEMEDIA_TOKEN": ADMIN})
            assert r.returncode == 0, r.stderr
            with pytest.raises(WorkerDiedError, match="ended by token 'admin'"):
                await b.ping()
            # A session id that never was.
            r = await cli("kill", "0" * 32, *at(srv), "--token", ADMIN)
            assert r.returncode == NOT_FOUND
            # Alice may end her own.
            alice_id = mine[0]["session_id"]
            r = await cli("kill", alice_id, *at(srv), "--token", ALICE)
            assert r.returncode == 0, r.stderr
            with pytest.raises(WorkerDiedError):
                await a.ping()
    run(main(), timeout=120)
    assert "ended through Admin/EndSession by admin" in srv.log_text()


def test_admin_rpcs_through_grpcio(token_server):
    """Other services use the Admin service over plain gRPC."""
    from remotemedia._proto import remotemedia_pb2 as pb
    ch = grpc.insecure_channel(f"{token_server.host}:{token_server.port}")
    info = ch.unary_unary("/remotemedia.v1.Admin/Info",
                          request_serializer=pb.InfoRequest.SerializeToString,
                          response_deserializer=pb.InfoReply.FromString)
    with pytest.raises(grpc.RpcError) as e:
        info(pb.InfoRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = info(pb.InfoRequest(), timeout=10, metadata=[("authorization", f"Bearer {BOB}")])
    assert reply.version == "0.1.0" and reply.limits["max-streams"] == "100"
    end = ch.unary_unary("/remotemedia.v1.Admin/EndSession",
                         request_serializer=pb.EndSessionRequest.SerializeToString,
                         response_deserializer=pb.EndSessionReply.FromString)
    with pytest.raises(grpc.RpcError) as e:
        end(pb.EndSessionRequest(session_id="x" * 5000), timeout=10,
            metadata=[("authorization", f"Bearer {ADMIN}")])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # over 1 KiB
    ch.close()


def test_list_sessions_counts_calls_not_the_last_call_id(server):
    """Call ids need only increase: 1, 5, 9 are three calls."""
    from h2raw import H2Client, call_result, open_session, split_grpc
    from remotemedia._proto import remotemedia_pb2 as pb
    c = H2Client(server.host, server.port, timeout=60)
    ch = grpc.insecure_channel(f"{server.host}:{server.port}")
    try:
        sid = open_session(c, timeout=60)
        ready = pb.ServerMessage.FromString(split_grpc(c.responses[sid].data)[-1]).ready
        for call_id in (1, 5, 9):
            assert call_result(c, sid, call_id, "ping", ()) == "pong"
        listing = ch.unary_unary("/remotemedia.v1.Admin/ListSessions",
                                 request_serializer=pb.ListSessionsRequest.SerializeToString,
                                 response_deserializer=pb.ListSessionsReply.FromString)
        mine = [s for s in listing(pb.ListSessionsRequest(), timeout=10).sessions
                if s.session_id == ready.session_id]
        assert [(s.state, s.calls, s.calls_in_flight) for s in mine] == [("ready", 3, 0)]
    finally:
        ch.close()
        c.close()


SOURCE = '''
class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, x, y=0):
        self.n += x + y
        print("adding", x, y)
        return {"n": self.n, "items": [x, y]}

    def count(self, k):
        for i in range(k):
            yield {"i": i, "n": self.n + i}

    def fail(self):
        raise ValueError("no such thing")

    def nan(self):
        return float("nan")

    @property
    def double(self):
        return {"twice": self.n * 2}
'''


def test_run_calls_a_method_and_streams_a_generator(server, tmp_path):
    src = tmp_path / "counter.py"
    src.write_text(SOURCE)
    base = ["run", *at(server), "--source", str(src), "--class", "Counter", "--init", "[40]"]
    r = rmctl(*base, "--call", "add", "--args", "[1]", "--kwargs", '{"y": 1}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"n": 42, "items": [1, 1]}
    assert "adding 1 1" in r.stderr
    r = rmctl(*base, "--call", "count", "--args", "[3]")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == \
        [{"i": 0, "n": 40}, {"i": 1, "n": 41}, {"i": 2, "n": 42}]
    r = rmctl(*base, "--call", "fail")
    assert r.returncode == 1
    assert "ValueError" in r.stderr and "no such thing" in r.stderr
    assert "Traceback" in r.stderr


def test_run_reads_a_property_or_an_attribute(server, tmp_path):
    """--call on what Ready's attribute map says is data reads it (a Call
    of kind GET), rather than calling it."""
    src = tmp_path / "counter.py"
    src.write_text(SOURCE)
    base = ["run", *at(server), "--source", str(src), "--class", "Counter", "--init", "[21]"]
    r = rmctl(*base, "--call", "double")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"twice": 42}
    r = rmctl(*base, "--call", "n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 21
    r = rmctl(*base, "--call", "double", "--args", " [ ] ", "--kwargs", "{ }")
    assert r.returncode == 0, r.stderr
    r = rmctl(*base, "--call", "double", "--args", "[1]")
    assert r.returncode == INVALID_ARGUMENT, r.stderr
    assert "--call double is not a method but a property or an attribute" in r.stderr


@pytest.mark.parametrize("extra,code,words", [
    (["--args", "{}"], 2, "--args"),
    (["--kwargs", "[1]"], 2, "--kwargs"),
    (["--call"], 2, "--call"),
    # Not UTF-8 (b"\xff", as the shell would pass it): told here, not by
    # the server as a message it cannot parse.
    (["--call", "m\udcff"], 2, "--call: not UTF-8"),
    (["--class", "C\udcff"], 2, "--class: not UTF-8"),
])
def test_run_bad_usage(server, tmp_path, extra, code, words):
    src = tmp_path / "c.py"
    src.write_text(SOURCE)
    r = rmctl("run", *at(server), "--source", str(src), "--class", "Counter",
              "--call", "add", *extra)
    assert r.returncode == code, r.stderr
    assert words in r.stderr


@pytest.mark.parametrize("call, words", [
    (["--call", "nan"], "result of 'nan' is not JSON serializable: Out of range float"),
    (["--call", "add", "--args", "[NaN]"], "invalid JSON in the arguments of 'add': "
     "NaN is not JSON"),
    (["--call", "add", "--args", "[1e400]"], "1e400 is out of the range of a float"),
    (["--call", "add", "--args", "[" * 5000 + "]" * 5000],
     "invalid JSON in the arguments of 'add': "),
])
def test_run_speaks_strict_json(server, tmp_path, call, words):
    """What rmctl prints is JSON, and what the worker takes too: no NaN or
    Infinity, which other languages' parsers refuse, and no nesting that
    overflows the parser's stack."""
    src = tmp_path / "c.py"
    src.write_text(SOURCE)
    r = rmctl("run", *at(server), "--source", str(src), "--class", "Counter", *call)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert words in r.stderr
    assert r.stdout == ""


def test_run_errors_exit_with_their_status(server, tmp_path):
    r = rmctl("run", *at(server), "--source", str(tmp_path / "absent.py"),
              "--class", "C", "--call", "m")
    assert r.returncode == INVALID_ARGUMENT and "absent.py" in r.stderr
    src = tmp_path / "c.py"
    src.write_text(SOURCE)
    r = rmctl("run", *at(server), "--source", str(src), "--class", "Nope", "--call", "m")
    assert r.returncode != 0 and "Nope" in r.stderr
    # Source that fails to load: its traceback, then the status (9) with
    # what to do about it.
    bad = tmp_path / "bad.py"
    bad.write_text("import rm_missing_module_q\n\nclass C:\n    pass\n")
    r = rmctl("run", *at(server), "--source", str(bad), "--class", "C", "--call", "m")
    assert r.returncode == 9, r.stderr
    assert "line 1, in <module>" in r.stderr, r.stderr
    assert "FAILED_PRECONDITION: cannot load the object: ModuleNotFoundError" in r.stderr
    assert "add its package to pip_packages" in r.stderr
    r = rmctl("run", *at(server), "--source", str(src), "--class", "Counter",
              "--pip", "not a requirement!!", "--call", "add", "--args", "[1]")
    assert r.returncode == INVALID_ARGUMENT, r.stderr


def test_exit_codes_follow_grpc_status(server, fresh_server):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = rmctl("info", "--port", str(port))
    assert r.returncode == UNAVAILABLE and "cannot connect" in r.stderr
    r = rmctl("--port", str(port), "--timeout", "2s", "health")
    assert r.returncode == UNAVAILABLE
    # A session the server refuses: RESOURCE_EXHAUSTED (8).
    srv = fresh_server(["--max-sessions", "1", "--session-pool", "0"])
    src_ok = rmctl("run", *at(srv), "--source", "/dev/null", "--class", "C", "--call", "m")
    assert src_ok.returncode == INVALID_ARGUMENT  # not a regular file

    async def hold(tmp):
        async with RemoteProxyClient(srv.config()) as c:
            await c.create_proxy(Ping())
            src = tmp / "c.py"
            src.write_text(SOURCE)
            r = await asyncio.get_running_loop().run_in_executor(None, lambda: rmctl(
                "run", *at(srv), "--source", str(src), "--class", "Counter",
                "--call", "add", "--args", "[1]"))
            assert r.returncode == 8 and "--max-sessions" in r.stderr, r
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        run(hold(Path(d)))


def test_options_before_the_command_must_be_common_ones():
    r = rmctl("--json", "info")
    assert r.returncode == 2 and "--json" in r.stderr
    r = rmctl("--port", "x", "info")
    assert r.returncode == 2 and "--port" in r.stderr
    r = rmctl("--token")
    assert r.returncode == 2


def test_tls_with_ca_verification(fresh_server, certs, server):
    srv = fresh_server(["--tls-cert", str(certs / "server.crt"),
                        "--tls-key", str(certs / "server.key")])
    r = rmctl("info", *at(srv), "--ca", str(certs / "ca.crt"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "0.1.0"
    # By name too (the certificate has DNS:localhost), where localhost
    # resolves: a debootstrap minbase root has no /etc/hosts.
    import socket
    try:
        socket.getaddrinfo("localhost", srv.port)
        by_name = True
    except socket.gaierror:
        by_name = False
    if by_name:
        r = rmctl("health", "--host", "localhost", "--port", str(srv.port), "--tls",
                  "--ca", str(certs / "ca.crt"))
        assert r.returncode == 0 and r.stdout.strip() == "SERVING", r.stderr
    # Not signed by a CA we trust (the system's, without --ca).
    r = rmctl("health", *at(srv), "--tls")
    assert r.returncode == UNAVAILABLE and "certificate" in r.stderr, r.stderr
    # TLS to a cleartext server fails cleanly, and cleartext to TLS too.
    r = rmctl("health", *at(server), "--tls", "--timeout", "3s")
    assert r.returncode in (UNAVAILABLE, DEADLINE_EXCEEDED), r.stderr
    r = rmctl("health", *at(srv), "--timeout", "3s")
    assert r.returncode in (UNAVAILABLE, DEADLINE_EXCEEDED, 13), r.stderr


def test_the_man_page_documents_every_command_and_option():
    page = (ROOT / "docs" / "rmctl.1").read_text()
    text = page.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "") \
        .replace("\\fI", "")
    usage = rmctl("--help").stdout
    import re
    commands = re.findall(r"^  ([a-z]+) ", usage, re.M)
    assert {"health", "info", "sessions", "kill", "run", "echo", "bench"} <= set(commands)
    for c in commands:
        assert re.search(rf"^\.(TP\n\.)?B[RI]? {c}\b", page, re.M) or \
            f"\n.B {c} " in page or f"\n.BR {c} " in page or f"\n.BI {c} " in page, c
    for flag in set(re.findall(r"(--[a-z][a-z-]+)", usage)):
        assert flag in text, flag
    groff = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page,
                           capture_output=True, text=True, timeout=30)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
