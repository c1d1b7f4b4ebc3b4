"""A real remotemediad on a free loopback port, for tests and benchmarks."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# RM_BUILD selects another build directory (e.g. build-asan, make
# sanitize-test); RM_SERVER_ARGS holds flags every server gets before the
# test's own (which win), e.g. "--sandbox off".
BUILD = Path(os.environ.get("RM_BUILD") or ROOT / "build").resolve()
SERVER_ARGS = shlex.split(os.environ.get("RM_SERVER_ARGS", ""))
# A hostile stand-in for the worker (--worker), by the name it is run as.
FAKE_WORKER = Path(__file__).resolve().parent / "fake_worker.py"


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    """Poll pred() until it is true; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def terminate(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM proc and wait for it, SIGKILL after timeout; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def front_errors(srv: "Server") -> list[str]:
    """Lines of the server log that say the front itself failed."""
    return [line for line in srv.log_text().splitlines()
            if re.match(r"ts=\S+ level=error proc=front ", line)]


def _environ(pid: int) -> list[bytes]:
    """A process's environment, or [] once it is gone."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _session_var(pid: int) -> bytes | None:
    """A worker's REMOTEMEDIA_SESSION=... entry. Between its fork and its
    exec a worker still has the front's environment, without it: wait
    (briefly) for the exec."""
    deadline = time.monotonic() + 2.0
    while True:
        env = _environ(pid)
        own = [v for v in env if v.startswith(b"REMOTEMEDIA_SESSION=")]
        if own or not env or time.monotonic() > deadline:
            return own[0] if own else None
        time.sleep(0.01)


class Server:
    """A running remotemediad and what a test needs to reach and inspect it."""

    def __init__(self, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = tempfile.mkdtemp(prefix="rm-state-")
        self.log_path = self.state_dir + ".log"
        self.log = open(self.log_path, "w+b")
        args = [
            str(BUILD / "remotemediad"),
            "--listen", "127.0.0.1:0",
            "--state-dir", self.state_dir,
            "--log-level", "debug",
        ] + SERVER_ARGS + list(extra_args or [])
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        self.host = "127.0.0.1"
        last = len(args) - 1 - args[::-1].index("--listen")
        self.port = self._wait_port(args[last + 1])

    def _wait_port(self, listen: str) -> int:
        """The port it listens on: from its log, or, where that is given
        and the log may be too quiet to say (--log-level warn), once it
        takes connections."""
        fixed = int(listen.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log_text()
            m = re.search(r"listening on \S+:(\d+)", text)
            if m:
                return int(m.group(1))
            if fixed:
                try:
                    socket.create_connection((self.host, fixed), 0.2).close()
                    return fixed
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"remotemediad exited: {text}")
            time.sleep(0.02)
        raise RuntimeError("remotemediad did not start listening")

    def sockets(self) -> int:
        """Sockets the front holds: its listeners, connections and
        workers' socketpairs."""
        fds = f"/proc/{self.proc.pid}/fd"
        n = 0
        for fd in os.listdir(fds):
            try:
                n += os.readlink(f"{fds}/{fd}").startswith("socket:")
            except OSError:
                pass
        return n

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def sessions_dir(self) -> Path:
        return Path(self.state_dir) / "sessions"

    def spare_ids(self) -> set[str]:
        """Ids of spare sessions (--session-pool) not taken by a session, from
        the debug log: each is logged before its directory or worker exists."""
        text = self.log_text()
        started = set(re.findall(r'pool_start: spare ([0-9a-f]{32})"?\n', text))
        return started - set(re.findall(r"front_pool_adopt: session ([0-9a-f]{32})", text))

    def session_workers(self) -> set[str]:
        """Ids of sessions that got a worker: started for them, or a spare's
        that they took."""
        text = self.log_text()
        spares = set(re.findall(r'pool_start: spare ([0-9a-f]{32})"?\n', text))
        spawned = set(re.findall(r"front_worker_spawn: session ([0-9a-f]{32})", text))
        return (spawned - spares) | set(
            re.findall(r"front_pool_adopt: session ([0-9a-f]{32})", text))

    def session_dirs(self, spares: bool = False) -> list[str]:
        """Session directories; those of spare sessions only if asked."""
        try:
            dirs = os.listdir(self.sessions_dir())
        except FileNotFoundError:
            return []
        skip = set() if spares else self.spare_ids()
        return sorted(d for d in dirs if d not in skip)

    def worker_pids(self, spares: bool = False) -> list[int]:
        """Live worker processes that are children of this server; those of
        spare sessions only if asked."""
        out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in out.splitlines()
                if line.split() and not line.split()[1].startswith("Z")]
        if spares:
            return pids
        own = {p: _session_var(p) for p in pids}
        skip = {f"REMOTEMEDIA_SESSION={i}".encode() for i in self.spare_ids()}
        return [p for p in pids if own[p] not in skip]

    def worker_pid_of(self, session_id: str) -> int:
        """The host pid of the process that runs session_id's Python (with
        the sandbox, the innermost of the worker's processes): inside a
        sandbox, os.getpid() is of no use."""
        want = f"REMOTEMEDIA_SESSION={session_id}".encode()
        parent: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if want not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/comm") as f:
                    if not f.read().startswith("remotemedia-wor"):
                        continue
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
        leaves = [p for p in parent if p not in parent.values()]
        if not leaves:
            raise LookupError(f"no worker for session {session_id}")
        return max(leaves, key=lambda p: self._depth(p, parent))

    @staticmethod
    def _depth(pid: int, parent: dict[int, int]) -> int:
        depth = 0
        while pid in parent:
            pid, depth = parent[pid], depth + 1
        return depth

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no worker and no session directory is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.worker_pids() and not self.session_dirs():
                return
            time.sleep(0.02)
        raise AssertionError(f"left behind: workers {self.worker_pids()}, "
                             f"dirs {self.session_dirs()}")

    def config(self, **kw):
        from remotemedia.core.node import RemoteExecutorConfig
        kw.setdefault("timeout", 30.0)
        return RemoteExecutorConfig(host=self.host, port=self.port, **kw)

    def stop(self) -> int:
        rc = terminate(self.proc)
        self.log.close()
        return rc

    def cleanup(self) -> None:
        """Remove the state directory and the log (after stop)."""
        import shutil
        shutil.rmtree(self.state_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass


NOBODY = 65534


class Unprivileged:
    """remotemediad run as nobody, from a copy nobody can read and run
    (the unprivileged fixture)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rm-nobody-")
        os.chmod(self.dir, 0o755)
        self.bin = os.path.join(self.dir, "bin")
        os.mkdir(self.bin)
        os.chmod(self.bin, 0o755)
        for name in ("remotemediad", "remotemedia-worker"):
            shutil.copy2(BUILD / name, os.path.join(self.bin, name))
            os.chmod(os.path.join(self.bin, name), 0o755)
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.state, 0o700)
        os.chown(self.state, NOBODY, NOBODY)
        self.log_path = os.path.join(self.dir, "log")
        self.proc: subprocess.Popen | None = None

    def argv(self, extra: list[str]) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                os.path.join(self.bin, "remotemediad"), "--listen", "127.0.0.1:0",
                "--state-dir", self.state] + extra

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def start(self, extra: list[str]) -> int:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv(extra), stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"listening on \S+:(\d+)", self.log_text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"remotemediad exited: {self.log_text()}")
            time.sleep(0.02)
        raise AssertionError(f"remotemediad did not start: {self.log_text()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return terminate(self.proc)

    def cleanup(self) -> None:
        self.stop()
        # Sealed environments are read-only, and nobody's.
        subprocess.run(["chmod", "-R", "u+w", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
