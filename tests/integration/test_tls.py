"""TLS (issue 6): ALPN h2, TLS 1.2+ only, cleartext refused cleanly, client
certificates, certificate reload on SIGHUP, and the client's verification."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import grpc
import pytest

from clientlib import run
from remotemedia.core.exceptions import RemoteMediaError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, ROOT
from targets import Echo


def tls_args(certs, client_ca=False):
    args = ["--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key")]
    if client_ca:
        args += ["--tls-client-ca", str(certs / "ca.crt")]
    return args


async def ping(srv, **kw):
    cfg = srv.config(ssl_enabled=True, max_retries=0, timeout=10.0, **kw)
    async with RemoteProxyClient(cfg) as client:
        p = await client.create_proxy(Echo())
        return await p.ping(5)


def s_client(port, *args, data=b""):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "localhost", *args],
                          input=data, capture_output=True, timeout=15)


def test_session_over_tls_with_the_test_ca(fresh_server, certs):
    srv = fresh_server(tls_args(certs))
    assert run(ping(srv, ca_file=str(certs / "ca.crt"))) == 5


def test_system_bundle_does_not_trust_the_test_ca(fresh_server, certs):
    srv = fresh_server(tls_args(certs))
    with pytest.raises(RemoteMediaError) as e:
        run(ping(srv))
    assert "certificate" in str(e.value).lower()


def test_wrong_ca_says_what_failed(fresh_server, certs):
    srv = fresh_server(tls_args(certs))
    with pytest.raises(RemoteMediaError) as e:
        run(ping(srv, ca_file=str(certs / "other-ca.crt")))
    assert "certificate" in str(e.value).lower()


def test_alpn_must_select_h2(fresh_server, certs):
    srv = fresh_server(tls_args(certs))
    ok = s_client(srv.port, "-alpn", "h2", "-CAfile", str(certs / "ca.crt"))
    assert b"ALPN protocol: h2" in ok.stdout
    bad = s_client(srv.port, "-alpn", "http/1.1", "-CAfile", str(certs / "ca.crt"))
    assert b"ALPN protocol: h2" not in bad.stdout
    assert b"alert" in bad.stderr.lower() or bad.returncode != 0
    assert srv.proc.poll() is None


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_only_tls_12_and_13(fresh_server, certs, version):
    srv = fresh_server(tls_args(certs))
    p = s_client(srv.port, version, "-alpn", "h2")
    assert b"Cipher is (NONE)" in p.stdout or p.returncode != 0
    for v in ("-tls1_2", "-tls1_3"):
        p = s_client(srv.port, v, "-alpn", "h2", "-CAfile", str(certs / "ca.crt"))
        assert b"Verify return code: 0 (ok)" in p.stdout, (v, p.stdout[-400:])


def test_tls_12_offers_only_the_suites_http2_allows(fresh_server, certs):
    """RFC 9113 9.2.2: no CBC, no static RSA key exchange under HTTP/2."""
    srv = fresh_server(tls_args(certs))
    # The test certificate is EC: suites of its key type that the server
    # would have taken before (CBC ones), offered one at a time.
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                   "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"):
        p = s_client(srv.port, "-tls1_2", "-cipher", cipher, "-alpn", "h2")
        assert b"Cipher is (NONE)" in p.stdout or p.returncode != 0, (cipher, p.stdout[-400:])
    p = s_client(srv.port, "-tls1_2", "-alpn", "h2", "-CAfile", str(certs / "ca.crt"))
    assert b"Verify return code: 0 (ok)" in p.stdout, p.stdout[-400:]
    assert b"GCM" in p.stdout or b"CHACHA20" in p.stdout, p.stdout[-800:]


def test_sigterm_sends_goaway_over_tls_too(fresh_server, certs):
    """With nothing open the server exits at once, but only once its final
    GOAWAY is written: through OpenSSL that takes a turn of the loop."""
    import ssl

    from h2raw import F_GOAWAY, F_SETTINGS, PREFACE, frame, raw_frames, raw_read
    srv = fresh_server(tls_args(certs))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection((srv.host, srv.port), timeout=10),
                           server_hostname="localhost")
    try:
        sock.sendall(PREFACE + frame(F_SETTINGS, 0, 0))
        raw_read(sock, 0.3)
        srv.proc.send_signal(signal.SIGTERM)
        got, _ = raw_read(sock, 3.0, stop_on_goaway=False)
        assert any(f[0] == F_GOAWAY for f in raw_frames(got)), raw_frames(got)
    finally:
        sock.close()
    assert srv.proc.wait(timeout=10) == 0


def test_cleartext_on_a_tls_port_is_closed_cleanly(fresh_server, certs):
    srv = fresh_server(tls_args(certs))
    with grpc.insecure_channel(f"{srv.host}:{srv.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
    s.settimeout(5)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert srv.proc.poll() is None
    assert run(ping(srv, ca_file=str(certs / "ca.crt"))) == 5


def test_client_certificates_required(fresh_server, certs):
    srv = fresh_server(tls_args(certs, client_ca=True))
    with pytest.raises(RemoteMediaError):
        run(ping(srv, ca_file=str(certs / "ca.crt")))
    assert run(ping(srv, ca_file=str(certs / "ca.crt"),
                    client_cert_file=str(certs / "client.crt"),
                    client_key_file=str(certs / "client.key"))) == 5


def test_rmctl_presents_a_client_certificate(fresh_server, certs):
    """rmctl against a --tls-client-ca server: with --cert and --key it is
    served; without, the handshake fails (14); one without the other is a
    usage error (2)."""
    from serverlib import BUILD
    srv = fresh_server(tls_args(certs, client_ca=True))

    def rmctl(*args):
        return subprocess.run([str(BUILD / "rmctl"), "--port", str(srv.port), "--host",
                               "localhost", "--ca", str(certs / "ca.crt"), *args],
                              capture_output=True, text=True, timeout=30)
    r = rmctl("--cert", str(certs / "client.crt"), "--key", str(certs / "client.key"), "health")
    assert r.returncode == 0 and r.stdout.strip() == "SERVING", r.stderr
    r = rmctl("health")  # refused after the handshake (TLS 1.3): the alert says why
    assert r.returncode == 14 and "certificate" in r.stderr, r.stderr
    r = rmctl("--cert", str(certs / "client.crt"), "health")
    assert r.returncode == 2 and "--cert and --key go together" in r.stderr
    r = rmctl("--cert", str(certs / "client.crt"), "--key", str(certs / "server.key"), "health")
    assert r.returncode == 1 and "--cert" in r.stderr, r.stderr


def test_certificate_reloaded_on_sighup(fresh_server, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    for f in ("server.crt", "server.key"):
        shutil.copy(certs / f, live / f)
    srv = fresh_server(["--tls-cert", str(live / "server.crt"),
                        "--tls-key", str(live / "server.key")])

    def serial():
        p = s_client(srv.port, "-alpn", "h2", "-CAfile", str(certs / "ca.crt"))
        x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=p.stdout,
                           capture_output=True, timeout=10)
        return x.stdout.strip()

    before = serial()
    new = tmp_path / "new"
    subprocess.run([str(ROOT / "scripts" / "gen-test-certs"), str(new)], check=True,
                   capture_output=True, timeout=60)
    shutil.copy(new / "server.crt", live / "server.crt")
    shutil.copy(new / "server.key", live / "server.key")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "TLS certificate reloaded" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS certificate reloaded" in srv.log_text()
    assert serial() != before
    assert run(ping(srv, ca_file=str(new / "ca.crt"))) == 5


def check_tls(certs, key) -> subprocess.Popen:
    """remotemediad --check-config with this key, on a terminal of its own:
    OpenSSL, asked for a passphrase, would prompt there."""
    import fcntl
    import termios
    master, slave = os.openpty()

    def own_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        p = subprocess.Popen([str(BUILD / "remotemediad"), "--check-config",
                              "--tls-cert", str(certs / "server.crt"), "--tls-key", str(key)],
                             stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True, preexec_fn=own_terminal)
    finally:
        os.close(slave)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    out = b""
    try:
        while chunk := os.read(master, 65536):
            out += chunk
    except OSError:
        pass  # the terminal is gone with its last process
    os.close(master)
    p.output = out.decode(errors="replace")
    return p


def test_an_encrypted_key_is_refused_without_a_prompt(certs, tmp_path):
    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs / "server.key"), "-aes256",
                    "-passout", "pass:secret", "-out", str(enc)], check=True, timeout=30)
    p = check_tls(certs, enc)
    assert p.returncode == 2, p.output  # it was killed, waiting at a prompt
    assert "is encrypted: give a key without a passphrase" in p.output
    assert "pass phrase" not in p.output


def test_a_fifo_as_key_is_refused_not_waited_on(certs, tmp_path):
    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo, 0o600)
    p = check_tls(certs, fifo)
    assert p.returncode == 2, p.output
    assert "--tls-key" in p.output and "not a regular file" in p.output


def test_an_encrypted_key_on_sighup_keeps_the_old_one(fresh_server, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs / "server.crt", live / "server.crt")
    shutil.copy(certs / "server.key", live / "server.key")
    srv = fresh_server(["--tls-cert", str(live / "server.crt"),
                        "--tls-key", str(live / "server.key")])
    subprocess.run(["openssl", "pkey", "-in", str(certs / "server.key"), "-aes256",
                    "-passout", "pass:secret", "-out", str(live / "server.key")],
                   check=True, timeout=30)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "not reloaded" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "is encrypted" in srv.log_text() and "not reloaded" in srv.log_text()
    assert run(ping(srv, ca_file=str(certs / "ca.crt"))) == 5
