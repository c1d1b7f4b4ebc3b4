"""The environment builder's sandbox, from inside a build.

A package whose build runs code of its own (an sdist, allowed with
--pip-allow-source) is the builder's hostile input. Its build backend here
tries what such a package would: read the server's state, another
environment and /etc/ssl/private, write outside the environment being
built, reach hosts that are not the index, and see other processes. It
records the errno of each attempt in the module it builds, and the test
reads them back from a session of that environment. The build itself must
succeed: the index stays reachable, through the builder's forwarder.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from clientlib import Session
from fixtures import tcp_listener
from pkgindex import PackageIndex, build_test_packages
from targets import Ping
from testnet import host_ipv4, veth_netns

BUILDER_UID = 60999  # the default --builder-uid

# The in-tree PEP 517 backend: it needs nothing from the index (no
# setuptools), does the probes, and writes a wheel by hand.
BACKEND = r'''
import base64, errno, hashlib, json, os, socket, zipfile

TARGETS = json.loads(%(targets)r)


def _errno(fn, *a):
    try:
        fn(*a)
        return 0
    except OSError as e:
        return e.errno


def _read(path):
    with open(path, "rb") as f:
        f.read(1)


def _write(path):
    with open(path, "wb") as f:
        f.write(b"escaped")


def _connect(host, port):
    with socket.create_connection((host, port), timeout=5):
        pass


def _http(host, port):
    """The status line of GET /simple/ from host:port, or the errno."""
    try:
        with socket.create_connection((host, port), timeout=10) as c:
            c.sendall(b"GET /simple/ HTTP/1.0\r\n\r\n")
            return c.makefile("rb").readline().decode().strip()
    except OSError as e:
        return e.errno


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return e.errno


def _resolve(name):
    try:
        socket.getaddrinfo(name, 80)
        return 0
    except socket.gaierror as e:
        return "gaierror %%d" %% e.errno


def probes():
    t = TARGETS
    r = {
        "uid": os.getuid(),
        "read_state_file": _errno(_read, t["state_file"]),
        "list_state_dir": _listdir(t["state_dir"]),
        "list_cache_dir": _listdir(t["cache_dir"]),
        "read_other_env": _errno(_read, t["other_env_file"]),
        "read_ssl_private": _errno(_read, "/etc/ssl/private/" + t["key"]),
        "list_ssl_private": _listdir("/etc/ssl/private"),
        "read_shadow": _errno(_read, "/etc/shadow"),
        "read_usr_share_doc": _errno(_read,
                                     "/usr/share/doc/base-files/copyright"),
        "write_cache_dir": _errno(_write, t["cache_dir"] + "/escaped"),
        "write_dist_packages": _errno(_write,
                                      "/usr/lib/python3/dist-packages/x.py"),
        "write_tmp": _errno(_write, "/tmp/" + t["tmp_name"]),
        "write_env": _errno(_write, os.environ["HOME"] + "/ok"),
        "connect_host_loopback": _errno(_connect, "127.0.0.1",
                                        t["listener_port"]),
        "connect_index_other_port": _errno(_connect, t["index_host"],
                                           t["listener_port"]),
        "resolve_name": _resolve("example.com"),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "build_dir": os.path.dirname(os.environ["HOME"]),
    }
    for name, (host, port) in t["extra_indexes"].items():
        r["index_" + name] = _http(host, port)
        r["index_" + name + "_other_port"] = _errno(_connect, host,
                                                    t["listener_port"])
    if t["host_ipv4"]:
        r["connect_host_address"] = _errno(_connect, t["host_ipv4"],
                                           t["listener_port"])
    return r


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return "%%s,sha256=%%s,%%d" %% (name, digest.rstrip(b"=").decode(),
                                 len(data))


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    files = {
        "rmtest_escape.py": ("RESULTS = %%r\n" %% (probes(),)).encode(),
        "rmtest_escape-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: rmtest-escape\nVersion: 1.0\n",
        "rmtest_escape-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    record = [_record_line(n, d) for n, d in files.items()]
    record.append("rmtest_escape-1.0.dist-info/RECORD,,")
    files["rmtest_escape-1.0.dist-info/RECORD"] = \
        ("\n".join(record) + "\n").encode()
    name = "rmtest_escape-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return name
'''

PYPROJECT = b"""[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


class Reader:
    def results(self):
        import rmtest_escape
        return rmtest_escape.RESULTS


def _add_escape_sdist(idx: PackageIndex, targets: dict) -> None:
    idx.add_sdist("rmtest-escape", "rmtest_escape-1.0.tar.gz", {
        "rmtest_escape-1.0/PKG-INFO":
            b"Metadata-Version: 2.1\nName: rmtest-escape\nVersion: 1.0\n\n",
        "rmtest_escape-1.0/pyproject.toml": PYPROJECT,
        "rmtest_escape-1.0/backend.py":
            (BACKEND % {"targets": json.dumps(targets)}).encode(),
    })


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    wheels = build_test_packages(tmp_path_factory.mktemp("wheels"))
    with PackageIndex([w for ws in wheels.values() for w in ws]) as index:
        yield index


@pytest.fixture
def ssl_key():
    """A root-only key in the host's /etc/ssl/private."""
    d = Path("/etc/ssl/private")
    created = not d.exists()
    d.mkdir(mode=0o710, exist_ok=True)
    key = d / "rm-build-test.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nhunter2\n")
    os.chmod(key, 0o600)
    yield key
    key.unlink(missing_ok=True)
    if created:
        d.rmdir()


@pytest.fixture
def host_listener():
    """A listener on the host's loopback and its other addresses."""
    with tcp_listener("0.0.0.0") as s:
        s.settimeout(0)
        yield s


def _accepted(s: socket.socket) -> bool:
    try:
        s.accept()[0].close()
        return True
    except BlockingIOError:
        return False


V4, V6 = "10.214.7.1", "fd00:214:7::1"


@pytest.fixture(scope="module")
def host_addresses():
    """Two addresses of the host that are not loopback ones (the host side
    of a test veth, IPv4 and IPv6) for indexes that the build must reach
    through its forwarder, which gives the build's lo the same addresses."""
    with veth_netns("rmbi", V4, "10.214.7.2"):
        veth = next(n for n in os.listdir("/sys/class/net")
                    if n.startswith("rmbih"))
        subprocess.run(["ip", "addr", "add", V6 + "/64", "dev", veth,
                        "nodad"], check=True, capture_output=True)
        yield V4, V6


@pytest.fixture(scope="module")
def extra_indexes(host_addresses, tmp_path_factory):
    """Index servers on those addresses: pip only warns about them (plain
    HTTP off loopback), the build's backend talks to them itself."""
    with PackageIndex(bind=host_addresses[0]) as v4, \
            PackageIndex(bind=host_addresses[1]) as v6:
        yield {"v4": v4, "v6": v6}


def test_build_is_confined(loop, servers, idx, ssl_key, host_listener,
                           extra_indexes):
    v4, v6 = extra_indexes["v4"], extra_indexes["v6"]
    srv = servers.start(["--pip-index-url", idx.url, "--pip-allow-source",
                         "on", "--pip-extra-index-url", v4.url,
                         "--pip-extra-index-url", v6.url])
    state = Path(srv.state_dir)
    cache = state / "envs"
    # Another environment, in the same cache, for the build to look at.
    other = Session(loop, srv, Ping(), pip_packages=["rmtest-app"])
    try:
        assert other.call("ping") == "pong"
    finally:
        other.close()
    entries = [p for p in cache.iterdir() if (p / "complete").exists()]
    assert len(entries) == 1, list(cache.iterdir())
    other_file = next(p for p in entries[0].rglob("*.py"))
    state_file = state / "state-secret"
    state_file.write_text("secret")
    tmp_name = f"rm-build-escape-{os.getpid()}"
    targets = {
        "state_file": str(state_file), "state_dir": str(state),
        "cache_dir": str(cache), "other_env_file": str(other_file),
        "key": ssl_key.name, "tmp_name": tmp_name,
        "listener_port": host_listener.getsockname()[1],
        "index_host": "127.0.0.1",
        "host_ipv4": None if host_ipv4() in (None, V4) else host_ipv4(),
        "extra_indexes": {"v4": [v4.host, v4.port], "v6": [v6.host, v6.port]},
    }
    _add_escape_sdist(idx, targets)

    s = Session(loop, srv, Reader(), pip_packages=["rmtest-escape"])
    try:
        r = s.call("results")
    finally:
        s.close()

    assert r["uid"] == BUILDER_UID
    # The server's state, other environments and host keys are not there.
    assert r["read_state_file"] == errno.ENOENT
    assert r["read_other_env"] == errno.ENOENT
    assert r["read_ssl_private"] == errno.ENOENT
    assert r["list_ssl_private"] == errno.ENOENT
    assert r["read_shadow"] == errno.ENOENT
    # On the way to the build's own directory (on the build's private /tmp
    # here, as the test's state dir is under /tmp) there is nothing else.
    build = Path(r["build_dir"])
    assert build.parent == cache and build.exists()
    assert r["list_cache_dir"] == [build.name]
    assert r["list_state_dir"] == ["envs"]
    # Landlock: /usr beyond what builds read (Python, libs, compilers).
    assert r["read_usr_share_doc"] == errno.EACCES
    # Writes: only the entry being built (HOME is in it); /tmp is private.
    assert r["write_env"] == 0
    assert r["write_cache_dir"] == errno.EACCES  # root's directory
    assert r["write_dist_packages"] == errno.EROFS
    assert r["write_tmp"] == 0
    assert not Path("/tmp", tmp_name).exists()
    assert not (cache / "escaped").exists()
    # The network: the index's port only; no DNS, no host address.
    assert r["connect_host_loopback"] == errno.ECONNREFUSED
    assert r["connect_index_other_port"] == errno.ECONNREFUSED
    if targets["host_ipv4"]:
        assert r["connect_host_address"] == errno.ENETUNREACH
    # Indexes on the host's other addresses, IPv4 and IPv6: reached at the
    # address in their URL, and only on their port.
    for name in ("v4", "v6"):
        assert r["index_" + name] == "HTTP/1.0 200 OK", r
        assert r["index_" + name + "_other_port"] == errno.ECONNREFUSED, r
    assert "/simple/" in v4.requested() and "/simple/" in v6.requested()
    # No DNS server in the namespace: glibc's default (127.0.0.1:53) refuses.
    assert r["resolve_name"] == f"gaierror {socket.EAI_AGAIN}"
    assert not _accepted(host_listener)
    # A PID namespace of its own: pip and the backend's processes (its
    # root-owned init is hidden by hidepid), no host process.
    assert 0 < len(r["pids"]) < 10 and max(r["pids"]) < 100, r["pids"]


def _localhost_resolves() -> bool:
    try:
        return bool(socket.getaddrinfo("localhost", 80))
    except socket.gaierror:
        return False


@pytest.mark.skipif(not _localhost_resolves(),
                    reason="localhost does not resolve here (no /etc/hosts)")
def test_build_reaches_an_index_by_name(loop, servers, idx):
    """An index given by name: the builder resolves it on the host, and
    the build's /etc/hosts maps the name to the forwarder's listener."""
    url = idx.url.replace("127.0.0.1", "localhost")
    srv = servers.start(["--pip-index-url", url])
    s = Session(loop, srv, Ping(), pip_packages=["rmtest-app"])
    try:
        assert s.call("ping") == "pong"
    finally:
        s.close()
    assert idx.count_files("rmtest-base") >= 1



def test_build_reads_find_links_directory(loop, servers, idx, tmp_path):
    """--pip-find-links with a local directory and no index: the build's
    root binds the directory read-only and Landlock lets pip read it; the
    same given as a file://localhost/ URL."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for f in idx.files.iterdir():
        if f.name.startswith(("rmtest_app-", "rmtest_base-")):
            (wheels / f.name).write_bytes(f.read_bytes())
    for links in (str(wheels), "file://localhost" + str(wheels)):
        srv = servers.start(["--pip-index-url", "none",
                             "--pip-find-links", links])
        s = Session(loop, srv, Ping(), pip_packages=["rmtest-app"])
        try:
            assert s.call("ping") == "pong"
        finally:
            s.close()
