"""Escape attempts from inside a session, against the real server (sandbox
on, as root). Each case runs what an attacker would run in a method of a
remote object and asserts the exact errno, signal or status it gets, in the
manner of bubblewrap's try-syscall probes. After every case a neighbour
session on the same server must still answer and the front must not have
logged an error.

Most cases run on one server with tight limits (conftest.LIMITED:
--session-memory 128M --session-pids 32 --session-disk 16M, network
isolated); the network-off, host-network and --seccomp-log cases start
servers of their own.

Run as root: PYTHONPATH=python /usr/bin/python3 -m pytest -q tests/escape
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from clientlib import Session
from probe import PTRACE_ATTACH, PTRACE_TRACEME, CLONE_NEWNET, \
    CLONE_NEWNS, CLONE_NEWUSER, Probe
from serverlib import front_errors
from testnet import host_ipv4

SESSION_UID_FIRST = 61000  # the default --session-uids
SECRET = Path("/etc/remotemedia-test-secret")


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def neighbour(loop, limited):
    """A session that every destructive case must leave unharmed."""
    s = Session(loop, limited, Probe())
    yield s
    s.close()


@pytest.fixture(scope="module")
def attacker(loop, limited):
    """A session for the probes that do not end it."""
    s = Session(loop, limited, Probe())
    yield s
    s.close()


@pytest.fixture
def fresh(loop, limited):
    """New sessions of the test's own on the limited server."""
    made: list[Session] = []

    def make(server=None, obj=None, **cfg) -> Session:
        s = Session(loop, server or limited, obj or Probe(), **cfg)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


_pings = itertools.count()


@pytest.fixture(autouse=True)
def unharmed(neighbour, limited):
    """After each case: the neighbour answers, the front lives and logged
    no error."""
    yield
    n = next(_pings)
    assert neighbour.call("ping", n, timeout=30) == n
    assert limited.proc.poll() is None, limited.log_text()[-3000:]
    assert front_errors(limited) == []


@pytest.fixture
def root_secret():
    """A root-only file standing in for tokens and TLS keys."""
    SECRET.write_text("token: hunter2\n")
    os.chmod(SECRET, 0o600)
    yield SECRET
    SECRET.unlink(missing_ok=True)


def _died(e, code, message):
    assert e.code == code, (e.code, str(e))
    assert str(e) == message


# --- other sessions, the state dir, secrets --------------------------------------


def test_other_sessions_files(fresh):
    a, b = fresh(), fresh()
    a_dir = a.call("identity")["cwd"]
    b_dir = b.call("identity")["cwd"]
    assert a.call("write_file", "secret", b"A's secret") == 0
    assert a.call("read_file", a_dir + "/secret") == (0, b"A's secret")
    # B tries A's absolute path: it is not there at all.
    assert b.call("read_file", a_dir + "/secret") == (errno.ENOENT, None)
    assert b.call("stat_errno", a_dir) == errno.ENOENT
    assert b.call("write_file", a_dir + "/planted") == errno.ENOENT
    # B's view of the sessions directory holds B alone.
    assert b.call("listdir", os.path.dirname(b_dir)) == \
        [os.path.basename(b_dir)]
    # And the secret never reached the host's copy of A's directory.
    assert os.listdir(a_dir) == ["tmp"]


def test_state_dir_not_visible(attacker, limited):
    state = Path(limited.state_dir)
    token = state / "tokens"
    token.write_text("admin:0123456789abcdef0123456789abcdef:admin\n")
    os.chmod(token, 0o600)
    try:
        cwd = attacker.call("identity")["cwd"]
        # Only the path down to the session directory exists, empty.
        assert attacker.call("listdir", str(state)) == ["sessions"]
        assert attacker.call("listdir", str(state / "sessions")) == \
            [os.path.basename(cwd)]
        assert attacker.call("read_file", str(token)) == (errno.ENOENT, None)
        assert attacker.call("stat_errno", str(state / "envs")) == \
            errno.ENOENT
        assert attacker.call("read_file", limited.log_path) == \
            (errno.ENOENT, None)
    finally:
        token.unlink()


def test_root_only_secret_not_visible(attacker, root_secret):
    assert attacker.call("read_file", str(root_secret)) == \
        (errno.ENOENT, None)
    for path in ("/etc/shadow", "/etc/ssh", "/root", "/home", "/run",
                 "/var", "/srv", "/opt", "/work", "/boot"):
        assert attacker.call("stat_errno", path) == errno.ENOENT, path
    # Only the CA certificates of /etc/ssl come in: private/ is not there.
    assert attacker.call("listdir", "/etc/ssl/private") == errno.ENOENT
    assert attacker.call("read_file", "/etc/ssl/private/remotemedia.key") \
        == (errno.ENOENT, None)
    assert attacker.call("stat_errno", "/etc/ssl/certs/ca-certificates.crt") == 0


# Host files that the minimal root shows but Landlock keeps from being read:
# what a session needs (its commands, libraries, Python, CA bundle, time
# zones, fonts) stays readable, and the rest of /usr, the root's listing and
# /usr/local are refused. Each path is one that every Debian host has.
HIDDEN_BY_LANDLOCK = (
    "/usr/share/doc/base-files/copyright",   # /usr/share beyond the data trees
    "/usr/share/common-licenses/GPL-3",
    "/usr/share/base-files/motd",
    "/usr/lib/python3.11/../../share/base-files/motd",  # no way round by ..
)
HIDDEN_DIRS = ("/", "/usr", "/usr/share", "/usr/sbin", "/usr/local",
               "/usr/lib", "/usr/share/doc")


def test_host_files_hidden_by_landlock(attacker):
    for path in HIDDEN_BY_LANDLOCK:
        assert attacker.call("read_file", path) == (errno.EACCES, None), path
        # The file is there: the mount namespace shows it, Landlock refuses.
        assert attacker.call("stat_errno", path) == 0, path
    for path in HIDDEN_DIRS:
        assert attacker.call("listdir", path) == errno.EACCES, path
    # What sessions need is still read: commands, libraries, Python's
    # standard library, Debian's dist-packages, certificates, time zones.
    for path in ("/usr/bin/env", "/usr/lib/python3.11/os.py",
                 "/etc/ssl/certs/ca-certificates.crt", "/etc/hostname",
                 "/usr/share/zoneinfo/UTC", "/proc/self/status"):
        err, data = attacker.call("read_file", path)
        assert err == 0 and data, path
    assert attacker.call("listdir", "/usr/lib/python3/dist-packages") != \
        errno.EACCES


# --- writes outside the session directory and /tmp ----------------------------------


@pytest.mark.parametrize("path,expect", [
    ("/usr/rm-probe", errno.EROFS),
    ("/usr/lib/python3/dist-packages/rm-probe.py", errno.EROFS),
    ("/etc/rm-probe", errno.EROFS),
    ("/etc/passwd", errno.EROFS),
    ("/rm-probe", errno.EROFS),
    ("/bin/rm-probe", errno.EROFS),
    ("/dev/rm-probe", errno.EROFS),
    # /var is not in the root at all; creating it fails on the read-only /.
    ("/var/rm-probe", errno.ENOENT),
    ("/var/tmp/rm-probe", errno.ENOENT),
    # A file the mounts let through: Landlock, the second wall, stops it.
    ("/proc/self/comm", errno.EACCES),
    # What the session may write.
    ("rm-probe", 0),
    ("/tmp/rm-probe", 0),
    ("/dev/shm/rm-probe", 0),
    ("/dev/null", 0),
])
def test_write_outside(attacker, path, expect):
    assert attacker.call("write_file", path) == expect


def test_mkdir_outside(attacker):
    for path in ("/var", "/sys", "/usr/rm-probe", "/rm-probe"):
        assert attacker.call("mkdir_errno", path) == errno.EROFS, path


# --- processes --------------------------------------------------------------------


def test_front_and_host_processes_invisible(attacker, limited):
    ident = attacker.call("identity")
    assert ident["pid"] == 2           # W1, the session's init, is 1
    assert ident["uid"][0] >= SESSION_UID_FIRST
    assert ident["capeff"] == ident["capbnd"] == "0000000000000000"
    assert ident["nnp"] == "1" and ident["seccomp"] == "2"
    front = limited.proc.pid
    assert attacker.call("kill_errno", front, 0) == errno.ESRCH
    assert attacker.call("kill_errno", front, 9) == errno.ESRCH
    # Only the session's own process; its init is hidden (hidepid).
    assert attacker.call("proc_pids") == [2]
    assert attacker.call("stat_errno", "/proc/%d" % front) == errno.ENOENT


# --- the syscalls the policy denies softly ----------------------------------------


SYSCALLS = [
    ("ptrace TRACEME", "ptrace", (PTRACE_TRACEME, 0, 0, 0), errno.EPERM),
    ("ptrace ATTACH 1", "ptrace", (PTRACE_ATTACH, 1, 0, 0), errno.EPERM),
    ("mount tmpfs", "mount", ("none", "/tmp", "tmpfs", 0, None), errno.EPERM),
    ("umount2 /tmp", "umount2", ("/tmp", 0), errno.EPERM),
    ("unshare USER|NS", "unshare", (CLONE_NEWUSER | CLONE_NEWNS,),
     errno.EPERM),
    ("setuid 0", "setuid", (0,), errno.EPERM),
    ("chroot /tmp", "chroot", ("/tmp",), errno.EPERM),
    ("pivot_root", "pivot_root", (".", "."), errno.EPERM),
    ("bpf", "bpf", (0, None, 0), errno.EPERM),
    ("perf_event_open", "perf_event_open", (None, 0, -1, -1, 0), errno.EPERM),
    ("io_uring_setup", "io_uring_setup", (1, None), errno.EPERM),
    ("keyctl", "keyctl", (0, 0), errno.EPERM),
    ("userfaultfd", "userfaultfd", (0,), errno.EPERM),
    ("process_vm_readv 1", "process_vm_readv", (1, None, 0, None, 0, 0),
     errno.EPERM),
    ("open_by_handle_at", "open_by_handle_at", (-1, None, 0), errno.EPERM),
    ("kexec_load", "kexec_load", (0, 0, None, 0), errno.EPERM),
    ("init_module", "init_module", (None, 0, ""), errno.EPERM),
    ("fsopen", "fsopen", ("tmpfs", 0), errno.EPERM),
    # clone() with namespace flags (without them it is fork and threads).
    ("clone NEWUSER", "clone", (CLONE_NEWUSER | 17, 0, 0, 0, 0), errno.EPERM),
    ("clone NEWNET", "clone", (CLONE_NEWNET | 17, 0, 0, 0, 0), errno.EPERM),
    ("kcmp", "kcmp", (1, 2, 0, 0, 0), errno.EPERM),
    ("pidfd_getfd", "pidfd_getfd", (0, 0, 0), errno.EPERM),
    # glibc falls back to clone on ENOSYS; EPERM would break threads.
    ("clone3", "clone3", (None, 0), errno.ENOSYS),
]


@pytest.mark.parametrize("name,nr,args,expect", SYSCALLS,
                         ids=[c[0] for c in SYSCALLS])
def test_denied_syscall(attacker, name, nr, args, expect):
    assert attacker.call("syscall", nr, *args) == (-1, expect)


def test_setns_and_setuid(attacker):
    assert attacker.call("setns_net") == (-1, errno.EPERM)
    assert attacker.call("setuid_errno", 0) == errno.EPERM
    # The SIGSYS handler cannot be replaced, to survive a violation.
    assert attacker.call("sigsys_handler_errno") == errno.EPERM
    # TIOCSTI is refused before the tty layer would say ENOTTY.
    assert attacker.call("tiocsti_errno") == errno.EPERM
    assert attacker.call("sched_fifo_errno") == errno.EPERM


SOCKETS = [
    ("inet raw icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP,
     errno.EPERM),
    ("inet6 raw", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6,
     errno.EPERM),
    ("packet raw", socket.AF_PACKET, socket.SOCK_RAW, 0, errno.EPERM),
    ("packet dgram", socket.AF_PACKET, socket.SOCK_DGRAM, 0, errno.EPERM),
    ("netlink audit", socket.AF_NETLINK, socket.SOCK_RAW, 9, errno.EPERM),
    # Ping sockets: the session's netns keeps ping_group_range at "1 0".
    ("inet icmp dgram", socket.AF_INET, socket.SOCK_DGRAM,
     socket.IPPROTO_ICMP, errno.EACCES),
    ("alg", 38, socket.SOCK_SEQPACKET, 0, errno.EAFNOSUPPORT),
    ("vsock", 40, socket.SOCK_STREAM, 0, errno.EAFNOSUPPORT),
    # What stays allowed.
    ("inet stream", socket.AF_INET, socket.SOCK_STREAM, 0, 0),
    ("netlink route", socket.AF_NETLINK, socket.SOCK_RAW, 0, 0),
]


@pytest.mark.parametrize("name,family,type_,proto,expect", SOCKETS,
                         ids=[c[0] for c in SOCKETS])
def test_socket(attacker, name, family, type_, proto, expect):
    assert attacker.call("socket_errno", family, type_, proto) == expect


# --- network ----------------------------------------------------------------------


def test_isolated_cannot_reach_host_loopback(attacker, limited, listener):
    assert attacker.call("interfaces") == ["lo", "tap0"]
    # 127.0.0.1 is the session's own loopback.
    assert attacker.call("connect_errno", "127.0.0.1", limited.port) == \
        errno.ECONNREFUSED
    assert attacker.call("connect_errno", "127.0.0.1", listener) == \
        errno.ECONNREFUSED
    # The gateway would be the host's loopback with host loopback enabled;
    # the egress policy refuses it first (10.0.0.0/8, test_egress.py).
    assert attacker.call("connect_errno", "10.0.2.2", limited.port) == \
        errno.EHOSTUNREACH
    assert attacker.call("connect_errno", "10.0.2.2", listener) == \
        errno.EHOSTUNREACH
    ip = host_ipv4()
    if ip is not None:
        # The host's own address is refused by the egress policy.
        assert attacker.call("connect_errno", ip, listener) == \
            errno.EHOSTUNREACH
        assert attacker.call("connect_errno", ip, limited.port) == \
            errno.EHOSTUNREACH


def test_isolated_dns_alias_with_loopback_resolver(loop, servers, tmp_path):
    """slirp's DNS alias 10.0.2.3 forwards to the host's resolver: with a
    resolver on the host's 127.0.0.1 (dnsmasq, unbound), it must not open
    a way to the host's loopback. The server runs in a mount namespace of
    the test's own, whose /etc/resolv.conf names 127.0.0.1."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(resolv, 0o644)
    srv = servers.start(wrapper=[
        "unshare", "-m", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)])
    with open("/proc/%d/root/etc/resolv.conf" % srv.proc.pid) as f:
        assert f.read() == "nameserver 127.0.0.1\n"  # the front's view
    s = Session(loop, srv, Probe())
    try:
        assert s.call("read_file", "/etc/resolv.conf") == \
            (0, b"nameserver 10.0.2.3\n")
        # Only port 53 of the DNS alias passes the egress policy.
        assert s.call("connect_errno", "10.0.2.3", srv.port) == \
            errno.EHOSTUNREACH
    finally:
        s.close()


@pytest.fixture(scope="module")
def net_off(servers):
    return servers.start(["--session-network", "off"])


def test_network_off(loop, net_off, listener):
    s = Session(loop, net_off, Probe())
    try:
        assert s.call("interfaces") == ["lo"]
        assert s.call("stat_errno", "/etc/resolv.conf") == errno.ENOENT
        assert s.call("connect_errno", "10.0.2.2", net_off.port) == \
            errno.ENETUNREACH
        assert s.call("connect_errno", "127.0.0.1", net_off.port) == \
            errno.ECONNREFUSED
        assert s.call("connect_errno", "127.0.0.1", listener) == \
            errno.ECONNREFUSED
        ip = host_ipv4()
        if ip is not None:
            assert s.call("connect_errno", ip, listener) == errno.ENETUNREACH
    finally:
        s.close()


def test_network_host_abstract_unix_sockets(loop, servers, limited):
    """`host` shares the host's network, the front's port included (the
    README says so). The host's abstract unix sockets are kept out by
    Landlock's scope (ABI 6): connect() is EPERM, not ECONNREFUSED."""
    srv = servers.start(["--session-network", "host"])
    name = b"rm-escape-%d" % os.getpid()
    ab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ab.bind(b"\0" + name)
    ab.listen(1)
    s = Session(loop, srv, Probe())
    try:
        assert s.call("connect_errno", "127.0.0.1", srv.port) == 0
        assert s.call("connect_abstract", name) == errno.EPERM
        # A name nobody holds is refused as anywhere (so a session can
        # still tell which names exist on the host: the kernel's choice).
        assert s.call("connect_abstract", b"rm-escape-nobody") == \
            errno.ECONNREFUSED
    finally:
        s.close()
        ab.close()


# --- resource exhaustion ----------------------------------------------------------


def test_fork_bomb(fresh, limited):
    s = fresh()
    forked, err = s.call("fork_bomb", 10000, timeout=60)
    # The pids cgroup (32) counts W0, W1, slirp4netns, W2 and its threads.
    assert err == errno.EAGAIN
    assert 10 <= forked < 32
    # The session survives, and its pids come back.
    assert s.call("ping", 7) == 7
    again, err = s.call("fork_bomb", 10000, timeout=60)
    assert err == errno.EAGAIN
    assert abs(again - forked) <= 2, (forked, again)


def test_memory_bomb(fresh, limited):
    s = fresh()
    e = s.error("memory_bomb", 2048, timeout=60)
    _died(e, grpc.StatusCode.RESOURCE_EXHAUSTED,
          "memory limit 128 MiB reached (--session-memory)")


def test_cpu_spin_leaves_neighbour_responsive(fresh, neighbour):
    s = fresh()
    spinning = s.submit("spin", 4, 8.0)
    time.sleep(1.0)
    assert not spinning.done(), spinning.result()
    t0 = time.monotonic()
    for i in range(100):
        assert neighbour.call("ping", i, timeout=10) == i
    elapsed = time.monotonic() - t0
    assert elapsed < 10.0, elapsed  # a generous bound, not a benchmark
    assert spinning.result(60) > 0


def test_disk_fill(fresh):
    s = fresh()
    cwd = s.call("identity")["cwd"]
    # One file: RLIMIT_FSIZE (= --session-disk) is hit at exactly 16 MiB,
    # before the tmpfs is full.
    assert s.call("fill", "big") == (errno.EFBIG, 16 << 20)
    assert s.call("fill", "/tmp/big") == (errno.EFBIG, 16 << 20)
    for path in ("big", "/tmp/big"):
        assert s.call("unlink_errno", path) == 0
    # Many files: the tmpfs itself is full, at exactly its size.
    for d in (".", "/tmp", "/dev/shm"):
        assert s.call("fill_many", d, 1 << 20, 64) == \
            (errno.ENOSPC, 16 << 20), d
    # Nothing of it touched the host's disk: the session directory is a
    # tmpfs that only the session's mount namespace sees.
    assert os.listdir(cwd) == ["tmp"]
    assert os.listdir(os.path.join(cwd, "tmp")) == []


def test_fd_exhaustion(attacker):
    n, err, limit = attacker.call("open_fds", 4096)
    assert err == errno.EMFILE
    assert limit == (1024, 1024)
    assert 1000 <= n < 1024


def test_core_dump(fresh, limited):
    s = fresh()
    assert s.call("rlimits")["RLIMIT_CORE"] == (0, 0)
    cwd = s.call("identity")["cwd"]
    front_cwd = os.readlink("/proc/%d/cwd" % limited.proc.pid)
    start = time.time() - 1
    e = s.error("abort")
    # No ", core dumped": the kernel wrote no core.
    _died(e, grpc.StatusCode.ABORTED, "worker killed by signal 6 (Aborted)")

    def cores(top, depth):
        found = []
        for root, dirs, files in os.walk(top):
            if root[len(top):].count(os.sep) >= depth:
                dirs[:] = []
            found += [os.path.join(root, f) for f in files
                      if f.startswith("core") and
                      os.lstat(os.path.join(root, f)).st_mtime >= start]
        return found
    assert cores(limited.state_dir, 6) == []
    assert cores(front_cwd, 1) == []
    assert not os.path.exists(cwd) or cores(cwd, 2) == []


# --- devices and /sys ---------------------------------------------------------------


def test_devices_and_sys(attacker):
    for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg",
                 "/dev/sda", "/dev/vda", "/dev/net/tun", "/dev/fuse"):
        assert attacker.call("open_errno", path) == errno.ENOENT, path
    assert set(attacker.call("listdir", "/dev")) <= {
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin",
        "stdout", "stderr", "shm"}
    assert attacker.call("read_file", "/sys/kernel/notes") == \
        (errno.ENOENT, None)
    assert attacker.call("write_file", "/sys/kernel/uevent_helper",
                         b"/tmp/x") == errno.ENOENT
    assert attacker.call("write_file", "/sys/fs/cgroup/pids/cgroup.procs",
                         b"1") == errno.ENOENT
    assert attacker.call("mkdir_errno", "/sys") == errno.EROFS
    # /proc is the session's own, and its sysctls are not writable.
    assert attacker.call("write_file", "/proc/sys/kernel/core_pattern",
                         b"|/tmp/x") == errno.EACCES
    assert attacker.call("write_file", "/proc/sysrq-trigger", b"b") == \
        (errno.EACCES if os.path.exists("/proc/sysrq-trigger")
         else errno.ENOENT)


def test_setuid_binary(attacker):
    uid = attacker.call("identity")["uid"][0]
    # chmod 04755 on its own file works, and the bit sticks; the mount is
    # nosuid (and no_new_privs is set), so running it changes nothing.
    assert attacker.call("setuid_binary", "/usr/bin/id", ["-u"]) == \
        (0, True, 0, str(uid))
    assert attacker.call("setuid_binary", "/bin/true", []) == \
        (0, True, 0, "")


# --- seccomp's kill path ------------------------------------------------------------


def test_seccomp_kill_names_the_syscall(fresh):
    s = fresh()
    e = s.error("syscall", "iopl", 3)
    _died(e, grpc.StatusCode.ABORTED, "seccomp: blocked syscall iopl (172)")


def _host_runs(method: str) -> bool:
    """Whether the probe's code runs outside any sandbox: a kernel built
    without IA32 emulation (or booted with ia32_emulation=0) has no int 0x80
    entry at all, and the instruction faults (SIGSEGV) everywhere."""
    lib = Path(__file__).resolve().parent.parent / "lib"
    code = ("import sys; sys.path.insert(0, %r); import probe; "
            "getattr(probe.ArchProbes(), %r)()" % (str(lib), method))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       timeout=30)
    return r.returncode == 0


@pytest.mark.parametrize("method", ["x32_getpid", "int80_getpid"])
def test_other_abis_are_killed(fresh, method):
    """The x32 ABI and int 0x80 (i386) are not the filter's architecture:
    the kernel kills the process outright, with no handler to name it.
    Where the host's kernel has no such entry, the instruction faults
    before any filter sees it, and nothing is left to check."""
    s = fresh()
    e = s.error(method)
    if method == "int80_getpid" and not _host_runs(method):
        _died(e, grpc.StatusCode.ABORTED,
              "worker killed by signal 11 (Segmentation fault)")
        return
    _died(e, grpc.StatusCode.ABORTED,
          "worker killed by signal 31 (Bad system call)")


def test_seccomp_log_lets_it_return(loop, servers):
    srv = servers.start(["--seccomp-log", "on"])
    s = Session(loop, srv, Probe())
    try:
        # Logged, not killed: the call runs and the kernel answers. This
        # kernel has no CONFIG_X86_IOPL_IOPERM, so iopl is ENOSYS here.
        assert s.call("syscall", "iopl", 3) == (-1, errno.ENOSYS)
        assert s.call("syscall", "vhangup") == (-1, errno.EPERM)
        # The soft denials still apply.
        assert s.call("syscall", "ptrace", PTRACE_TRACEME, 0, 0, 0) == \
            (-1, errno.EPERM)
        assert s.call("ping", 3) == 3
    finally:
        s.close()


# --- the worker protocol, spoken by the session itself ---------------------------------


def test_garbage_frames_end_only_that_session(fresh):
    s = fresh()
    e = s.error("raw_frame", 2, 9, b"x")
    _died(e, grpc.StatusCode.INTERNAL,
          "worker protocol violation: unknown frame type")
    s = fresh()
    e = s.error("raw_frame", 0x7FFFFFFF, 1)
    _died(e, grpc.StatusCode.INTERNAL,
          "worker protocol violation: message larger than the limit")
    s = fresh()
    e = s.error("raw_frame", 4, 1, b"\xff\xff\xff")
    _died(e, grpc.StatusCode.INTERNAL,
          "worker protocol violation: malformed message (call 0)")


# --- holes ----------------------------------------------------------------------------


def test_no_descriptor_on_the_server_log(attacker, limited):
    st = os.stat(limited.log_path)
    fds = attacker.call("fstat_all")
    leaked = sorted(fd for fd, (dev, ino, _) in fds.items()
                    if (dev, ino) == (st.st_dev, st.st_ino))
    forged = "front: info: session 0000: forged by %s" % attacker.session_id
    evidence = []
    for fd in leaked:
        wrote, err, data = attacker.call("abuse_fd", fd,
                                         (forged + "\n").encode())
        evidence.append(dict(
            fd=fd, wrote=wrote,
            forged_line_in_log=forged in limited.log_text().splitlines(),
            read_back=(err, len(data or b""),
                       b"listening on" in (data or b""))))
    assert leaked == [], evidence


def test_fatal_message_cannot_forge_log_lines(fresh, limited):
    s = fresh()
    forged = "front: info: session 0000: forged by %s" % s.session_id
    e = s.error("fatal_frame", 2, "bye\n" + forged)
    assert e.code == grpc.StatusCode.UNKNOWN
    assert forged not in limited.log_text().splitlines()
