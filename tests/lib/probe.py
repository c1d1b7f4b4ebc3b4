"""What an attacker runs inside a session: the methods of Attacker execute
on the server, in the sandbox, and report plain values (results and errno
numbers, never exceptions where a number says more), which the tests on the
client assert on. Like bubblewrap's try-syscall, every probe is one syscall
or one operation with its exact outcome.

This module travels to the server by value (cloudpickle), so it imports
nothing of the test suite. The escape suite hosts Probe (every probe);
tests/integration/test_sandbox_direct.py builds its Probe on Attacker.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import threading
import time

# x86_64 syscall numbers.
NR = {
    "ptrace": 101, "setuid": 105, "chroot": 161, "mount": 165,
    "umount2": 166, "iopl": 172, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "setns": 308, "process_vm_readv": 310,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "clone3": 435,
    "getpid": 39, "open_by_handle_at": 304, "kexec_load": 246,
    "init_module": 175, "pivot_root": 155, "fsopen": 430,
    "vhangup": 153, "modify_ldt": 154, "clone": 56, "kcmp": 312,
    "pidfd_getfd": 438, "pidfd_open": 434,
}
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PTRACE_TRACEME = 0
PTRACE_ATTACH = 16


def errno_of(fn, *args, **kw):
    """0 if fn worked, else the errno of the OSError it raised."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, (bytes, str)):
        return ctypes.c_char_p(a.encode() if isinstance(a, str) else a)
    if isinstance(a, ctypes._SimpleCData) or isinstance(a, ctypes.Array):
        return a
    return ctypes.c_long(a)


class Attacker:
    """Probes run in the session; each returns what it got."""

    # -- generic -------------------------------------------------------------

    def ping(self, x=0):
        return x

    def syscall(self, name_or_nr, *args):
        """A raw syscall: (return value, errno) as the C library saw them."""
        nr = NR.get(name_or_nr, name_or_nr)
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        ctypes.set_errno(0)
        rv = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
        return int(rv), ctypes.get_errno()

    def identity(self):
        status = open("/proc/self/status").read()
        fields = dict(line.split(":\t", 1) for line in status.splitlines()
                      if ":\t" in line)
        return {"uid": os.getresuid(), "gid": os.getresgid(),
                "groups": os.getgroups(), "pid": os.getpid(),
                "cwd": os.getcwd(),
                "nnp": fields["NoNewPrivs"].strip(),
                "seccomp": fields["Seccomp"].strip(),
                "capeff": fields["CapEff"].strip(),
                "capbnd": fields["CapBnd"].strip(),
                "caps": {k: fields[k].strip() for k in
                         ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
                "hostname": socket.gethostname()}

    def env(self, names):
        return {n: os.environ.get(n) for n in names}

    # -- files ---------------------------------------------------------------

    def write_file(self, path, data=b"x"):
        def go():
            with open(path, "wb") as f:
                f.write(data)
        return errno_of(go)

    def read_file(self, path):
        """(errno, data): errno 0 and the bytes, or the errno and None."""
        try:
            with open(path, "rb") as f:
                return 0, f.read()
        except OSError as e:
            return e.errno, None

    def open_errno(self, path, flags=os.O_RDONLY):
        def go():
            os.close(os.open(path, flags, 0o644))
        return errno_of(go)

    def mkdir_errno(self, path):
        def go():
            os.mkdir(path)
            os.rmdir(path)
        return errno_of(go)

    def listdir(self, path):
        try:
            return sorted(os.listdir(path))
        except OSError as e:
            return e.errno

    def stat_errno(self, path):
        return errno_of(os.lstat, path)

    def fds(self):
        """The open descriptors: fd -> (target, is-regular-file, flags)."""
        out = {}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                target = os.readlink("/proc/self/fd/" + name)
                import stat as st
                mode = os.fstat(fd).st_mode
                flags = open("/proc/self/fdinfo/" + name).read()
                out[fd] = (target, st.S_ISREG(mode), flags)
            except OSError:
                continue
        return out

    def write_fd(self, fd, data):
        try:
            return os.write(fd, data)
        except OSError as e:
            return -e.errno

    def reopen_fd(self, fd):
        """Read a file by reopening /proc/self/fd/N (the magic link)."""
        try:
            with open("/proc/self/fd/%d" % fd, "rb") as f:
                return 0, f.read()
        except OSError as e:
            return e.errno, None

    def fill(self, path, chunk=1 << 20, limit=1 << 30):
        """Append chunk-sized blocks to one file until a write fails:
        (errno, bytes written). Bounded by limit."""
        block = b"\1" * chunk
        written = 0
        try:
            with open(path, "wb", buffering=0) as f:
                while written < limit:
                    written += f.write(block)
        except OSError as e:
            return e.errno, written
        return 0, written

    def fill_many(self, directory, size=1 << 20, nfiles=1024):
        """Create files of size bytes until one fails: (errno, total)."""
        block = b"\1" * size
        total = 0
        for i in range(nfiles):
            try:
                with open(os.path.join(directory, "fill%d" % i), "wb",
                          buffering=0) as f:
                    total += f.write(block)
            except OSError as e:
                return e.errno, total
        return 0, total

    def unlink_errno(self, path):
        return errno_of(os.unlink, path)

    def remove_fill(self, directory):
        for name in os.listdir(directory):
            if name.startswith("fill"):
                os.unlink(os.path.join(directory, name))
        return True

    def setuid_binary(self, src, args):
        """Copy src into the cwd, make it setuid, and run it: the chmod
        errno, whether the bit stuck, and what the program printed."""
        import shutil
        import stat as st
        dst = os.path.join(os.getcwd(), os.path.basename(src) + "-suid")
        shutil.copy(src, dst)
        rc = errno_of(os.chmod, dst, 0o4755)
        mode = os.stat(dst).st_mode
        p = subprocess.run([dst] + list(args), capture_output=True, text=True,
                           timeout=20)
        return rc, bool(mode & st.S_ISUID), p.returncode, p.stdout.strip()

    # -- processes -----------------------------------------------------------

    def kill_errno(self, pid, sig=0):
        return errno_of(os.kill, pid, sig)

    def proc_pids(self):
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())

    def setuid_errno(self, uid=0):
        return errno_of(os.setuid, uid)

    def fork_bomb(self, attempts=10000):
        """Fork until it fails, children sleeping: (forked, errno). The
        children are killed and reaped before returning."""
        import signal as sg
        kids, err = [], 0
        for _ in range(attempts):
            try:
                pid = os.fork()
            except OSError as e:
                err = e.errno
                break
            if pid == 0:
                try:
                    time.sleep(60)
                finally:
                    os._exit(0)
            kids.append(pid)
        for pid in kids:
            try:
                os.kill(pid, sg.SIGKILL)
            except OSError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        return len(kids), err

    def memory_bomb(self, chunks=2048):
        """Allocate and touch 1 MiB at a time; bounded by chunks."""
        hold = []
        for _ in range(chunks):
            hold.append(b"\1" * (1 << 20))
        return len(hold)

    def spin(self, threads=4, seconds=8.0):
        """Burn CPU in threads that release the GIL (hashlib on big
        buffers): the number of hashes done."""
        import hashlib
        data = b"\0" * (8 << 20)
        deadline = time.monotonic() + seconds
        counts = [0] * threads

        def run(i):
            while time.monotonic() < deadline:
                hashlib.sha256(data).digest()
                counts[i] += 1
        ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts)

    def open_fds(self, attempts=4096):
        """Open /dev/null until it fails: (count, errno, the soft limit)."""
        import resource
        fds, err = [], 0
        for _ in range(attempts):
            try:
                fds.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as e:
                err = e.errno
                break
        n = len(fds)
        for fd in fds:
            os.close(fd)
        return n, err, resource.getrlimit(resource.RLIMIT_NOFILE)

    def rlimits(self):
        import resource
        return {name: resource.getrlimit(getattr(resource, name))
                for name in ("RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_FSIZE",
                             "RLIMIT_CPU", "RLIMIT_AS")}

    def setns_net(self):
        """setns() with a real namespace descriptor (its own)."""
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            return self.syscall("setns", fd, CLONE_NEWNET)
        finally:
            os.close(fd)

    def sigsys_handler_errno(self):
        """Replace the seccomp SIGSYS handler (to survive a violation)."""
        import signal
        return errno_of(signal.signal, signal.SIGSYS, lambda *a: None)

    def tiocsti_errno(self):
        """TIOCSTI on fd 0 (/dev/null): ENOTTY if the filter let it by."""
        import fcntl
        import termios
        return errno_of(fcntl.ioctl, 0, termios.TIOCSTI, b"x")

    def abort(self):
        os.abort()

    def sched_fifo_errno(self):
        return errno_of(os.sched_setscheduler, 0, os.SCHED_FIFO,
                        os.sched_param(1))

    def fstat_all(self):
        """Every open descriptor: fd -> (st_dev, st_ino, is a regular file)."""
        import stat as st
        out = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                s = os.fstat(int(name))
            except OSError:
                continue
            out[int(name)] = (s.st_dev, s.st_ino, st.S_ISREG(s.st_mode))
        return out

    def abuse_fd(self, fd, line):
        """Through an inherited descriptor: write line, then read the file
        back by reopening /proc/self/fd/N. (write result, errno, data)."""
        wrote = self.write_fd(fd, line)
        err, data = self.reopen_fd(fd)
        return wrote, err, data

    # -- the worker protocol, spoken directly on the worker's socket ----------

    def raw_frame(self, length, type_, payload=b"", wait=10.0):
        """Write one worker frame header (and payload) on the session's
        socket, bypassing the runtime; then wait to be ended."""
        import _rmworker  # the runtime's module: where the socket is
        hdr = length.to_bytes(4, "big") + bytes([type_])
        os.write(_rmworker.fileno(), hdr + payload)
        time.sleep(wait)
        return "still running"

    def fatal_frame(self, code, message, wait=10.0):
        """A WorkerControl{fatal: {code, message}} control frame, encoded
        by hand (proto/worker.proto)."""
        msg = message.encode()

        def varint(n):
            out = b""
            while True:
                b, n = n & 0x7F, n >> 7
                out += bytes([b | (0x80 if n else 0)])
                if not n:
                    return out
        fatal = b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg
        ctl = b"\x12" + varint(len(fatal)) + fatal
        return self.raw_frame(len(ctl) + 1, 2, ctl, wait)

    # -- sockets -------------------------------------------------------------

    def socket_errno(self, family, type_, proto=0):
        def go():
            socket.socket(family, type_, proto).close()
        return errno_of(go)

    def connect_errno(self, host, port, timeout=5.0):
        def go():
            socket.create_connection((host, port), timeout=timeout).close()
        try:
            return errno_of(go)
        except socket.timeout:
            return errno.ETIMEDOUT

    def connect_abstract(self, name):
        def go():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(5)
                s.connect(b"\0" + name)
            finally:
                s.close()
        return errno_of(go)

    def fetch(self, host, port, payload=b"", timeout=5.0):
        with socket.create_connection((host, port), timeout=timeout) as s:
            if payload:
                s.sendall(payload)
            return s.recv(200)

    def interfaces(self):
        return sorted(name for _, name in socket.if_nameindex())


def _exec_code(code: bytes):
    """Map code into an executable page and call it: (result, errno)."""
    import mmap
    buf = mmap.mmap(-1, mmap.PAGESIZE,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(ctypes.c_long)(addr)
    return int(fn())


class ArchProbes:
    """Syscalls through the other ABIs of x86_64, which the filter must not
    let through: the x32 ABI (nr | 0x40000000) and int 0x80 (i386)."""

    def x32_getpid(self):
        # mov eax, 0x40000027 (x32 getpid); syscall; ret
        return _exec_code(b"\xb8\x27\x00\x00\x40\x0f\x05\xc3")

    def int80_getpid(self):
        # mov eax, 20 (i386 getpid); int 0x80; ret
        return _exec_code(b"\xb8\x14\x00\x00\x00\xcd\x80\xc3")


class Probe(Attacker, ArchProbes):
    """Every probe, for a session to host."""
