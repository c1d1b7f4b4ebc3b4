"""Authentication (issue 6): bearer tokens from --token-file."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import grpc
import pytest

from clientlib import run
from remotemedia.core.exceptions import AuthenticationError, RemoteMediaError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD
from targets import Echo

TOKEN_A = "alice-token-0123456789abcdef"
TOKEN_B = "bob-token-0123456789abcdef00"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# who may open sessions\nalice:{TOKEN_A}\n\nroot:{TOKEN_B}:admin\n")
    path.chmod(0o600)
    return path


async def ping(srv, token):
    async with RemoteProxyClient(srv.config(auth_token=token, max_retries=0)) as client:
        p = await client.create_proxy(Echo())
        return await p.ping(7)


def test_right_token_opens_a_session(fresh_server, token_file):
    srv = fresh_server(["--token-file", str(token_file)])
    assert run(ping(srv, TOKEN_A)) == 7
    assert run(ping(srv, TOKEN_B)) == 7
    assert "owner alice" in srv.log_text()


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", TOKEN_A + "x", ""])
def test_missing_or_wrong_token_is_unauthenticated_before_any_worker(fresh_server, token_file, token):
    srv = fresh_server(["--token-file", str(token_file)])
    with pytest.raises(AuthenticationError) as e:
        run(ping(srv, token))
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in str(e.value)
    assert srv.session_dirs() == [] and srv.worker_pids() == []
    assert srv.session_workers() == set()  # no worker was started or taken


def test_long_tokens_are_compared_whole(fresh_server, tmp_path):
    """Tokens as long as a token file's line allows: the whole header is
    compared (the front once kept its first 512 bytes, which let a 505-byte
    token with anything after it in, and kept a 600-byte one out)."""
    short, long_ = "s" * 505, "L" * 600
    path = tmp_path / "tokens"
    path.write_text(f"short:{short}\nlong:{long_}\n")
    path.chmod(0o600)
    srv = fresh_server(["--token-file", str(path)])
    with grpc.insecure_channel(f"{srv.host}:{srv.port}") as ch:
        echo = ch.stream_stream("/remotemedia.v1.RemoteExecution/Echo")

        def status(token):
            try:
                list(echo(iter([b"\x0a\x01x"]), timeout=5,
                          metadata=[("authorization", f"Bearer {token}")]))
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                return e.code()
        assert status(short) == grpc.StatusCode.OK
        assert status(long_) == grpc.StatusCode.OK
        assert status(short + "anything") == grpc.StatusCode.UNAUTHENTICATED
        assert status(long_[:-1] + "x") == grpc.StatusCode.UNAUTHENTICATED
        assert status(long_ * 20) == grpc.StatusCode.UNAUTHENTICATED


def test_echo_needs_a_token_and_health_does_not(fresh_server, token_file):
    srv = fresh_server(["--token-file", str(token_file)])
    with grpc.insecure_channel(f"{srv.host}:{srv.port}") as ch:
        assert ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5) == b"\x08\x01"
        echo = ch.stream_stream("/remotemedia.v1.RemoteExecution/Echo")
        with pytest.raises(grpc.RpcError) as e:
            list(echo(iter([b"\x0a\x01x"]), timeout=5))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        got = list(echo(iter([b"\x0a\x01x"]), timeout=5,
                        metadata=[("authorization", f"Bearer {TOKEN_A}")]))
        assert got == [b"\x0a\x01x"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_token_file_readable_by_others_is_refused(tmp_path, token_file, mode):
    token_file.chmod(mode)
    p = subprocess.run([str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0",
                        "--state-dir", str(tmp_path / "st"), "--token-file", str(token_file)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "chmod 600" in p.stderr


def test_malformed_token_file_is_refused(tmp_path):
    bad = tmp_path / "tokens"
    bad.write_text("just-a-token-without-a-name\n")
    bad.chmod(0o600)
    p = subprocess.run([str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0",
                        "--state-dir", str(tmp_path / "st"), "--token-file", str(bad)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "NAME:TOKEN" in p.stderr


def check_tokens(tmp_path, path) -> subprocess.CompletedProcess:
    """remotemediad --check-config with this token file."""
    return subprocess.run([str(BUILD / "remotemediad"), "--check-config",
                           "--token-file", str(path)],
                          capture_output=True, text=True, timeout=10)


def test_a_fifo_as_token_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "tokens"
    os.mkfifo(fifo, 0o600)
    r = check_tokens(tmp_path, fifo)  # blocked in open() before
    assert r.returncode == 2, r.stderr
    assert "not a regular file" in r.stderr


@pytest.mark.parametrize("line, why", [
    # Read in pieces, the tail made its own (admin) entry.
    ("alice:" + "T" * 1019 + "bob:" + "U" * 20 + ":admin", "line too long"),
    ("alice:" + "T" * 1030, "line too long"),
    ("al\xffice:" + TOKEN_A, "printable ASCII"),
    (" alice:" + TOKEN_A, "without a space at either end"),
    ("alice:" + TOKEN_A + " ", "without a space at either end"),
    ("alice:" + TOKEN_A + "\x01", "printable ASCII"),
    (f"alice:{TOKEN_A}\nroot:{TOKEN_A}:admin", "the token of 'root' is also the token of 'alice'"),
])
def test_token_file_entries_a_client_could_not_use_are_refused(tmp_path, line, why):
    path = tmp_path / "tokens"
    path.write_bytes(line.encode("latin-1") + b"\n")
    path.chmod(0o600)
    r = check_tokens(tmp_path, path)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and "configuration OK" not in r.stdout


def test_inner_spaces_are_taken(tmp_path):
    """An authorization header carries them as they are."""
    path = tmp_path / "tokens"
    path.write_text("bob smith:a token with inner spaces\n")
    path.chmod(0o600)
    r = check_tokens(tmp_path, path)
    assert r.returncode == 0, r.stderr
    assert "1 token(s) loaded" in r.stderr


def test_a_line_of_1024_characters_is_taken(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("alice:" + "T" * 1018 + "\n")
    path.chmod(0o600)
    r = check_tokens(tmp_path, path)
    assert r.returncode == 0, r.stderr
    assert "1 token(s) loaded" in r.stderr


def test_sighup_reloads_tokens_and_sessions_stay(fresh_server, token_file):
    srv = fresh_server(["--token-file", str(token_file)])
    new = "carol-token-0123456789abcdef"

    async def main():
        async with RemoteProxyClient(srv.config(auth_token=TOKEN_A)) as client:
            p = await client.create_proxy(Echo())
            assert await p.ping(1) == 1
            token_file.write_text(f"carol:{new}\n")
            token_file.chmod(0o600)
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "1 token(s) loaded" not in srv.log_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert await p.ping(2) == 2  # the established session stays
        with pytest.raises(AuthenticationError):
            await ping(srv, TOKEN_A)
        assert await ping(srv, new) == 7
        # a broken file on SIGHUP keeps the tokens that were loaded
        token_file.chmod(0o644)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "not reloaded" not in srv.log_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await ping(srv, new) == 7
    run(main())


def test_non_loopback_needs_a_token_file(tmp_path):
    p = subprocess.run([str(BUILD / "remotemediad"), "--listen", "0.0.0.0:0",
                        "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "--token-file" in p.stderr and "--allow-unauthenticated" in p.stderr


def test_allow_unauthenticated_says_so(fresh_server):
    srv = fresh_server(["--listen", "0.0.0.0:0", "--allow-unauthenticated", "on"])
    assert "WITHOUT AUTHENTICATION" in srv.log_text()


@pytest.mark.parametrize("value", [f"Bearer {TOKEN_A} ", f"Bearer {TOKEN_A}\t", f" Bearer {TOKEN_A}"])
def test_a_token_with_an_edge_space_is_told_so_not_reset(fresh_server, token_file, value):
    """RFC 9113 forbids whitespace at either end of a field value (a token
    pasted with its newline or a space), and nghttp2 reset such a stream:
    the client saw PROTOCOL_ERROR and no reason. The authorization header
    is answered instead, with UNAUTHENTICATED that says what is wrong;
    another forbidden field still resets its stream, and the connection
    goes on."""
    import h2.config
    import h2raw

    srv = fresh_server(["--token-file", str(token_file), "--log-level", "debug"])
    c = h2raw.H2Client(srv.host, srv.port)
    try:
        # python-h2 would strip or refuse what the test sends on purpose.
        c.conn.config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False)
        sid = c.request(h2raw.ECHO, h2raw.grpc_frame(b"\x0a\x01x"),
                        extra=[("authorization", value)])
        r = c.wait(sid)
        assert r.reset is None
        assert r.grpc_status == 16  # UNAUTHENTICATED
        assert "malformed authorization header" in r.grpc_message
        assert TOKEN_A not in srv.log_text()
        sid = c.request(h2raw.ECHO, h2raw.grpc_frame(b"\x0a\x01x"),
                        extra=[("authorization", f"Bearer {TOKEN_A}"), ("x-note", "end ")])
        assert c.wait(sid).reset == h2raw.PROTOCOL_ERROR
        assert 'a header field that HTTP/2 forbids (name \\"x-note\\")' in srv.log_text()
        sid = c.request(h2raw.ECHO, h2raw.grpc_frame(b"\x0a\x01x"),
                        extra=[("authorization", f"Bearer {TOKEN_A}")])
        r = c.wait(sid)
        assert r.grpc_status == 0 and r.data.endswith(b"\x0a\x01x")
    finally:
        c.close()
