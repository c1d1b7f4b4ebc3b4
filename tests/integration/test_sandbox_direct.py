"""The worker's sandbox, driven directly through a fake front (workerlib).

Each test opens a session with the sandbox on (Init fields 11 and up in
proto/worker.proto) and asks an object inside it what it can see and do:
the session's own uid, a new PID namespace, a minimal read-only root, a
size-limited session dir and /tmp, no host loopback. With the sandbox off
everything works as before, and the worker says so loudly.

The isolated-network test builds its own network namespace and veth pair
(10.213.0.1 in the test's namespace, 10.213.0.2 on the host side) and
removes them afterwards, whatever happens.

Run as root: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_sandbox_direct.py
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

import workerlib
from probe import Attacker
from testnet import veth_netns
from workerlib import FakeFront, Fatal

pytestmark = [
    pytest.mark.skipif(not workerlib.WORKER.exists(),
                       reason="make build/remotemedia-worker first"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root"),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(sys.modules[Attacker.__module__])

UID = 61000
GID = 61000
# A uid of this run's own for the tests that count the session's processes,
# so that other suites' sessions do not count.
SOLO_UID = 62000 + os.getpid() % 1000
DISK = 64 << 20
NET_OFF, NET_ISOLATED, NET_HOST = 0, 1, 2
# What the minimal root may hold at its top (sandbox/sandbox_ns.c).
ROOT_ALLOWED = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr",
                "etc", "dev", "proc", "tmp"}


class SandboxFront(FakeFront):
    """A fake front whose Init turns the sandbox on."""

    def __init__(self, session_dir, sandbox=None, **kw):
        super().__init__(session_dir, **kw)
        self.sandbox = sandbox or {}

    def send_init(self, **overrides):
        fields = dict(self.sandbox)
        fields.update(overrides)
        super().send_init(**fields)


def _errno_of(fn, *args):
    """Run fn; 0 if it worked, else the errno of the OSError it raised."""
    try:
        fn(*args)
        return 0
    except TimeoutError:
        return errno.ETIMEDOUT
    except OSError as e:
        return e.errno


class Probe(Attacker):
    """Runs inside the session and reports what it sees: the escape suite's
    probes (tests/lib/probe.py: identity, listdir, write_file, fetch,
    interfaces, syscall...) and these."""

    def exists(self, path):
        return os.path.lexists(path)

    def cwd(self):
        return os.getcwd(), os.environ.get("HOME"), os.environ.get("TMPDIR")

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def write_big(self, path, nbytes):
        block = b"\0" * (1 << 20)

        def go():
            with open(path, "wb") as f:
                for _ in range(nbytes // len(block)):
                    f.write(block)
        rv = _errno_of(go)
        try:
            os.unlink(path)
        except OSError:
            pass
        return rv

    def connect(self, host, port):
        def go():
            socket.create_connection((host, port), timeout=3).close()
        return _errno_of(go)

    def resolve(self, name):
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})

    def threads(self, n=8):
        out = []
        ts = [threading.Thread(target=out.append, args=(i,))
              for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sorted(out)

    def run(self, argv):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout

    def matmul(self):
        import numpy as np
        a = np.arange(40000, dtype=float).reshape(200, 200)
        return float((a @ a.T).trace())

    def background(self):
        subprocess.Popen(["/bin/sleep", "1000"], start_new_session=True)
        return True

    def die(self, sig):
        os.kill(os.getpid(), sig)

    def exit(self, code):
        os._exit(code)


@pytest.fixture
def front_maker():
    """front() (tests/lib/fixtures.py) makes sandboxed fake fronts."""
    def make(session_dir, network=NET_OFF, enabled=True, wrap=(), **fields):
        sandbox = dict(sandbox=enabled, uid=UID, gid=GID, network=network,
                       disk_bytes=DISK)
        sandbox.update(fields)
        return SandboxFront(session_dir, sandbox=sandbox, wrap=wrap)
    return make


@pytest.fixture
def probe(front):
    f = front()
    f.open(Probe())
    return f


def _session_procs(uid=SOLO_UID):
    """Host pids of processes running as uid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat("/proc/" + name).st_uid == uid:
                pids.append(int(name))
        except OSError:
            pass
    return pids


def _wait_no_session_procs(timeout=5.0):
    deadline = time.monotonic() + timeout
    while _session_procs() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _session_procs()


@pytest.fixture
def solo(front):
    """A session with a Probe open, as SOLO_UID."""
    f = front(uid=SOLO_UID, gid=SOLO_UID)
    f.open(Probe())
    return f


# Identity and namespaces -----------------------------------------------------


def test_identity(probe):
    ident = probe.call_value("identity")
    assert ident["uid"] == (UID, UID, UID)
    assert ident["gid"] == (GID, GID, GID)
    assert ident["groups"] in ([], [GID])
    assert set(ident["caps"].values()) == {"0000000000000000"}
    assert ident["nnp"] == "1"
    assert ident["hostname"] == "remotemedia"


def test_pid_namespace(probe):
    assert probe.call_value("identity")["pid"] <= 3
    # Only the session's processes are there; the init is hidden.
    procs = [p for p in probe.call_value("listdir", "/proc") if p.isdigit()]
    assert len(procs) <= 2


# The minimal root ---------------------------------------------------------------


def test_minimal_root(probe):
    # Landlock refuses the root's listing; what is there is found by name:
    # of the host's top-level entries, only the allowed ones.
    assert probe.call_value("listdir", "/") == errno.EACCES
    top = {name for name in os.listdir("/") + sorted(ROOT_ALLOWED)
           if probe.call_value("exists", "/" + name)}
    assert top <= ROOT_ALLOWED, top - ROOT_ALLOWED
    assert {"usr", "etc", "dev", "proc", "tmp"} <= top
    for path in ("/root", "/home", "/var", "/srv", "/opt", "/sys", "/work",
                 "/etc/shadow", "/etc/ssh", "/run"):
        assert not probe.call_value("exists", path), path


def test_state_dir_not_visible(probe, tmp_path):
    (tmp_path / "secret-token").write_text("hunter2")
    (probe.session_dir / "left-by-front").write_text("x")
    parent = str(probe.session_dir.parent)
    # The session dir's parent holds nothing but the session dir: no other
    # session, no worker log, no token.
    assert probe.call_value("listdir", parent) == [probe.session_dir.name]
    assert not probe.call_value("exists", str(tmp_path / "secret-token"))
    # The session dir is a fresh tmpfs: only the tmp/ that TMPDIR names.
    assert probe.call_value("listdir", str(probe.session_dir)) == ["tmp"]


def test_dev_minimal(probe):
    dev = set(probe.call_value("listdir", "/dev"))
    assert {"null", "zero", "urandom", "shm", "fd"} <= dev
    assert not dev & {"sda", "vda", "mem", "kmsg", "net", "pts", "ptmx"}
    assert probe.call_value("write_file", "/dev/null") == 0


def test_system_read_only(probe):
    for path in ("/usr/rm-probe", "/etc/passwd", "/rm-probe",
                 "/dev/rm-probe", "/bin/rm-probe"):
        assert probe.call_value("write_file", path) in (errno.EROFS,
                                                        errno.EACCES), path


def test_session_dir_and_tmp_writable(probe):
    cwd, home, tmpdir = probe.call_value("cwd")
    assert cwd == home == str(probe.session_dir)
    assert tmpdir == str(probe.session_dir / "tmp")
    assert probe.call_value("write_file", "here", b"cwd") == 0
    assert probe.call_value("write_file", "/tmp/there", b"tmp") == 0
    assert probe.call_value("write_file", tmpdir + "/t", b"tmpdir") == 0
    assert probe.call_value("read", "here") == b"cwd"
    assert probe.call_value("read", "/tmp/there") == b"tmp"
    # A tmpfs of the session's own: nothing reaches the host's directory.
    assert not (probe.session_dir / "here").exists()


def test_disk_limit(probe):
    assert probe.call_value("write_big", "big", DISK + (8 << 20),
                            timeout=30) in (errno.ENOSPC, errno.EFBIG)
    assert probe.call_value("write_big", "/tmp/big", DISK + (8 << 20),
                            timeout=30) in (errno.ENOSPC, errno.EFBIG)
    # The space comes back.
    assert probe.call_value("write_file", "after", b"ok") == 0


# Network -------------------------------------------------------------------------


def test_network_off(probe, listener):
    assert probe.call_value("interfaces") == ["lo"]
    assert probe.call_value("connect", "127.0.0.1", listener) == \
        errno.ECONNREFUSED
    assert not probe.call_value("exists", "/etc/resolv.conf")


def test_network_host(front):
    f = front(network=NET_HOST)
    f.open(Probe())
    assert f.call_value("interfaces") == \
        sorted(name for _, name in socket.if_nameindex())
    if os.path.exists("/etc/resolv.conf"):
        with open("/etc/resolv.conf", "rb") as r:
            assert f.call_value("read", "/etc/resolv.conf") == r.read()


# What user code needs --------------------------------------------------------------


def test_threads_subprocess_numpy(probe):
    assert probe.call_value("threads") == list(range(8))
    assert probe.call_value("run", ["/bin/true"]) == (0, "")
    rc, out = probe.call_value("run", ["/usr/bin/id", "-u"])
    assert (rc, out.strip()) == (0, str(UID))
    a = sum(float(i) * float(i) for i in range(40000))
    assert probe.call_value("matmul", timeout=30) == a


# The process layout: status relay, signals, cleanup --------------------------------


def test_exit_code_relayed(probe):
    probe.send_call("exit", 3)
    assert probe.wait_exit() == 3


def test_signal_death_relayed(probe):
    probe.send_call("die", signal.SIGSEGV)
    assert probe.wait_exit() == -signal.SIGSEGV


def test_sigterm_forwarded(probe):
    probe.proc.send_signal(signal.SIGTERM)
    assert probe.wait_exit() == -signal.SIGTERM


def test_orphans_killed_at_end(solo):
    assert solo.call_value("background")
    assert len(_session_procs()) >= 2
    solo.close()
    assert solo.wait_exit() == 0
    assert _wait_no_session_procs() == []


def test_front_death_kills_session(solo):
    assert solo.call_value("background")
    solo.proc.kill()
    solo.proc.wait(timeout=10)
    assert _wait_no_session_procs() == []


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")
def test_seccomp_violation_named(probe):
    if probe.call_value("identity")["seccomp"] != "2":
        pytest.skip("this worker build loads no seccomp filter")
    probe.send_call("syscall", 153)  # vhangup: killed by the policy
    probe.read_until(lambda: probe.fatal, timeout=10)
    assert probe.fatal.code == 10  # ABORTED
    assert probe.fatal.message == "seccomp: blocked syscall vhangup (153)"
    assert probe.wait_exit() == -signal.SIGSYS


def test_setup_failure_is_fatal(front):
    f = front(uid=0, gid=0)
    with pytest.raises(Fatal) as ei:
        f.open(Probe())
    assert ei.value.code == 13
    assert "sandbox" in ei.value.message
    assert f.wait_exit() != 0
    assert "refusing to run a session as uid or gid 0" in f.worker_log()


def test_missing_required_path_named(front):
    """A path the session cannot do without is named, with the reason."""
    f = front(env_dir="/nonexistent-env")
    with pytest.raises(Fatal) as ei:
        f.open(Probe())
    assert ei.value.message == \
        "sandbox: bind /nonexistent-env: No such file or directory"
    assert f.wait_exit() != 0
    assert "bind /nonexistent-env: No such file or directory" in \
        f.worker_log()


# Host files a minimal root lacks (debootstrap --variant=minbase) ------------

# /etc entries the sandbox binds when the host has them (sandbox_ns.c), and
# the host files it writes its own of.
OPTIONAL_ETC = ["localtime", "timezone", "ssl/certs", "ssl/openssl.cnf",
                "ca-certificates", "alternatives", "mime.types", "protocols",
                "services", "host.conf", "gai.conf", "matplotlibrc", "fonts",
                "resolv.conf", "python3", "python3.11"]
WRITTEN_ETC = ["hosts", "nsswitch.conf", "passwd", "group", "hostname"]


@pytest.fixture
def bare_etc(tmp_path):
    """An /etc with only the dynamic loader's files: the worker is started
    in a mount namespace of its own with this bound over /etc."""
    etc = tmp_path / "bare-etc"
    etc.mkdir()
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d"):
        subprocess.run(["cp", "-a", "/etc/" + name, str(etc)], check=True)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc && exec "$@"', str(etc)]


@pytest.mark.parametrize("network", [NET_OFF, NET_HOST])
def test_optional_host_files_absent(front, bare_etc, network):
    f = front(network=network, wrap=bare_etc)
    f.open(Probe())
    for name in OPTIONAL_ETC:
        assert not f.call_value("exists", "/etc/" + name), name
    for name in WRITTEN_ETC:
        assert f.call_value("exists", "/etc/" + name), name
    # The session's own /etc/hosts and nsswitch.conf resolve localhost.
    assert "127.0.0.1" in f.call_value("resolve", "localhost")
    assert f.call_value("threads") == list(range(8))
    assert f.call_value("run", ["/bin/true"]) == (0, "")
    assert "the host has no /etc/protocols: skipped" in f.worker_log()


def test_localhost_resolves(probe):
    assert "127.0.0.1" in probe.call_value("resolve", "localhost")
    assert "passwd: files" in \
        probe.call_value("read", "/etc/nsswitch.conf").decode()


# Sandbox off ----------------------------------------------------------------------


def test_sandbox_off_runs_as_before(front):
    f = front(enabled=False)
    f.open(Probe())
    ident = f.call_value("identity")
    assert ident["uid"] == (0, 0, 0)
    assert ident["pid"] == f.proc.pid
    assert "root" in f.call_value("listdir", "/")
    assert f.call_value("write_file", "here") == 0
    assert (f.session_dir / "here").exists()
    assert f.call_value("run", ["/bin/true"]) == (0, "")
    assert f.call_value("matmul", timeout=30) > 0
    assert "SANDBOX OFF: session test-session runs unconfined as uid 0" in \
        f.worker_log()


# Isolated network ------------------------------------------------------------------

NS_HOST_IP = "10.213.0.2"
NS_PEER_IP = "10.213.0.1"


@pytest.fixture
def test_netns():
    """A network namespace of the test's own, reached from the host over a
    veth pair; yields (name, its address). Always removed."""
    with veth_netns("rmsbx", NS_HOST_IP, NS_PEER_IP) as ns:
        yield ns


@pytest.fixture
def ns_server(test_netns):
    """A TCP server in the test's namespace that says hello; its port."""
    code = ("import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
            "socket.SO_REUSEADDR,1); s.bind((%r,0)); s.listen(8)\n"
            "print(s.getsockname()[1], flush=True)\n"
            "s.settimeout(60)\n"
            "while True:\n"
            "    c,_=s.accept(); c.sendall(b'hello from the test netns');"
            " c.close()\n" % NS_PEER_IP)
    p = subprocess.Popen(["ip", "netns", "exec", test_netns, sys.executable,
                          "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        yield port
    finally:
        p.kill()
        p.wait(timeout=10)


def test_network_isolated(front, ns_server, listener):
    # The test's namespace has a private address, which the egress policy
    # refuses unless allowed (tests/escape/test_egress.py has the rest).
    f = front(network=NET_ISOLATED, uid=SOLO_UID, gid=SOLO_UID,
              egress_allow=[NS_PEER_IP + "/32"])
    f.open(Probe(), timeout=30)
    assert "tap0" in f.call_value("interfaces")
    assert f.call_value("read", "/etc/resolv.conf") == \
        b"nameserver 10.0.2.3\n"
    # Out through slirp4netns to an address the test's namespace owns.
    assert f.call_value("fetch", NS_PEER_IP, ns_server, timeout=15) == \
        b"hello from the test netns"
    # The host's loopback is out of reach, by its own address (that is the
    # session's lo) and through the gateway (--disable-host-loopback).
    assert f.call_value("connect", "127.0.0.1", listener) == \
        errno.ECONNREFUSED
    assert f.call_value("connect", "10.0.2.2", listener, timeout=15) in \
        (errno.ENETUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT,
         errno.EHOSTUNREACH)
    f.close()
    assert f.wait_exit() == 0
    assert _wait_no_session_procs() == []
