"""Legitimate work runs inside the sandbox: the scientific stack, threads,
subprocesses, asyncio, temporary files and outbound HTTP, against the real
server with default flags (network isolated), the way a user's object
would do it. The counterpart of test_escape.py: a policy tight enough to
stop the attacks must still let all of this through.

The HTTP case builds a network namespace of the test's own, reached from
the host over a veth pair (as tests/integration/test_sandbox_direct.py
does), runs `python3 -m http.server` in it with `ip netns exec`, and has
the session fetch from it with requests, through slirp4netns.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from clientlib import Session
from serverlib import _session_var, wait_for
from testnet import veth_netns


class Work:
    """What a user's object does; runs in the session."""

    def numpy(self):
        import numpy as np
        rng = np.random.default_rng(42)
        a = rng.standard_normal((300, 200))
        b = rng.standard_normal((200, 100))
        c = a @ b
        return c.shape, float(np.abs(c).sum()), float(np.linalg.norm(a))

    def pandas(self):
        import pandas as pd
        df = pd.DataFrame({"g": ["a", "b", "a", "b", "c"],
                           "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
        desc = df.describe()
        groups = df.groupby("g")["x"].sum()
        return float(desc.loc["mean", "x"]), groups.to_dict()

    def scipy(self):
        import numpy as np
        from scipy import stats
        x = np.random.default_rng(1).standard_normal(200)
        stat, p = stats.shapiro(x)
        return float(stat), float(p)

    def sklearn(self, n_jobs):
        from sklearn.datasets import load_iris
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import cross_val_score
        X, y = load_iris(return_X_y=True)
        clf = RandomForestClassifier(n_estimators=20, random_state=0,
                                     n_jobs=n_jobs)
        clf.fit(X, y)
        scores = cross_val_score(clf, X, y, cv=3, n_jobs=n_jobs)
        return float(clf.score(X, y)), [float(s) for s in scores]

    def matplotlib(self):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [0, 1, 4])
        ax.set_title("sandboxed")
        fig.savefig("plot.png")
        plt.close(fig)
        with open("plot.png", "rb") as f:
            return f.read()

    def threads(self):
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda i: i * i, range(32)))

    def subprocesses(self):
        echo = subprocess.run(["/bin/echo", "hello"], capture_output=True,
                              text=True, timeout=20)
        pipe = subprocess.run("echo hello world | tr a-z A-Z | wc -c",
                              shell=True, capture_output=True, text=True,
                              timeout=20)
        return echo.returncode, echo.stdout, pipe.returncode, \
            pipe.stdout.strip()

    async def gather(self, n, delay):
        import asyncio
        t0 = time.monotonic()
        out = await asyncio.gather(*(asyncio.sleep(delay, result=i)
                                     for i in range(n)))
        return out, time.monotonic() - t0

    def tempfiles(self):
        import tempfile
        out = {"gettempdir": tempfile.gettempdir(), "cwd": os.getcwd()}
        for d in ("/tmp", ".", None):
            with tempfile.NamedTemporaryFile(dir=d) as f:
                f.write(b"data")
                f.flush()
                with open(f.name, "rb") as g:
                    out[str(d)] = (os.path.dirname(os.path.abspath(f.name)),
                                   g.read())
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "x"), "w") as f:
                f.write("y")
            out["tmpdir_ok"] = os.listdir(d) == ["x"]
        return out

    def http_get(self, url):
        import requests
        r = requests.get(url, timeout=10)
        return r.status_code, r.text

    def child_python(self):
        """A Python child started as multiprocessing and loky start theirs."""
        import subprocess
        p = subprocess.run(
            [sys.executable, *subprocess._args_from_interpreter_flags(), "-c",
             "import joblib, numpy, sys; print(sys.flags.no_site)"],
            capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr[-300:]

    def thread_env(self):
        names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
        return {n: os.environ.get(n) for n in names}


@pytest.fixture(scope="module")
def default_server(servers):
    # The test's own namespace below has a private address, which the
    # egress policy refuses unless allowed.
    return servers.start(["--session-egress-allow", "10.215.0.0/16"])


@pytest.fixture(scope="module")
def work(loop, default_server):
    s = Session(loop, default_server, Work(), timeout=60)
    yield s
    s.close()


def test_numpy(work):
    import numpy as np
    rng = np.random.default_rng(42)
    a = rng.standard_normal((300, 200))
    b = rng.standard_normal((200, 100))
    shape, total, norm = work.call("numpy")
    assert tuple(shape) == (300, 100)
    assert total == pytest.approx(float(np.abs(a @ b).sum()))
    assert norm == pytest.approx(float(np.linalg.norm(a)))


def test_pandas(work):
    mean, groups = work.call("pandas")
    assert mean == 3.0
    assert groups == {"a": 4.0, "b": 6.0, "c": 5.0}


def test_scipy(work):
    stat, p = work.call("scipy")
    assert 0.9 < stat <= 1.0
    assert 0.0 <= p <= 1.0


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sklearn(work, n_jobs):
    fit, scores = work.call("sklearn", n_jobs, timeout=90)
    assert fit > 0.95
    assert len(scores) == 3 and min(scores) > 0.8


def test_matplotlib(work):
    png = work.call("matplotlib", timeout=60)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000


def test_threads(work):
    assert work.call("threads") == [i * i for i in range(32)]


def test_subprocess(work):
    assert work.call("subprocesses") == (0, "hello\n", 0, "12")


def test_a_python_child_imports_the_host_packages(work):
    """The worker runs without site; its Python children must not (loky's
    resource tracker imports joblib before it has the session's path)."""
    assert work.call("child_python") == (0, "0\n", "")


def test_asyncio(work):
    out, elapsed = work.call("gather", 20, 0.2)
    assert out == list(range(20))
    assert elapsed < 2.0  # concurrent, not 20 x 0.2 s


def test_tempfiles(work):
    out = work.call("tempfiles")
    cwd = out["cwd"]
    assert out["gettempdir"] == os.path.join(cwd, "tmp")  # TMPDIR
    assert out["/tmp"] == ("/tmp", b"data")
    assert out["."] == (cwd, b"data")
    assert out["None"] == (os.path.join(cwd, "tmp"), b"data")
    assert out["tmpdir_ok"] is True


def test_thread_env_default(work):
    env = work.call("thread_env")
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"


def test_thread_env_follows_session_cpu(loop, servers):
    srv = servers.start(["--session-cpu", "200"])
    s = Session(loop, srv, Work())
    try:
        env = s.call("thread_env")
        assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "2"
        # And numpy runs with them, within the session's pids.
        assert tuple(s.call("numpy")[0]) == (300, 100)
    finally:
        s.close()


# --- HTTP through slirp4netns to a namespace of the test's own ---------------------

TAG = os.getpid() % 250
NS_HOST_IP = "10.215.%d.2" % TAG
NS_PEER_IP = "10.215.%d.1" % TAG


@pytest.fixture
def test_netns():
    """A network namespace reached from the host over a veth pair; always
    removed."""
    with veth_netns("rmesc", NS_HOST_IP, NS_PEER_IP) as ns:
        yield ns


@pytest.fixture
def http_server(test_netns, tmp_path):
    """`python3 -m http.server` in the test's namespace; its base URL."""
    (tmp_path / "hello.txt").write_text("hello from the test netns\n")
    port = 18000 + TAG
    p = subprocess.Popen(
        ["ip", "netns", "exec", test_netns, sys.executable, "-m",
         "http.server", "--bind", NS_PEER_IP, "--directory", str(tmp_path),
         str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["ip", "netns", "exec", test_netns, sys.executable, "-c",
                 "import socket; socket.create_connection((%r, %d), 1)"
                 % (NS_PEER_IP, port)], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("http.server did not start")
        yield "http://%s:%d" % (NS_PEER_IP, port)
    finally:
        p.kill()
        p.wait(timeout=10)


def test_requests_through_isolated_network(work, http_server):
    assert work.call("http_get", http_server + "/hello.txt", timeout=60) == \
        (200, "hello from the test netns\n")


# --- slirp4netns ending under a session --------------------------------------------

def slirp_of(w0: int) -> int | None:
    """The slirp4netns that a worker's W0 started, if one runs."""
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(w0)],
                         capture_output=True, text=True).stdout
    pids = [int(f[0]) for f in map(str.split, out.splitlines())
            if len(f) == 2 and f[1] == "slirp4netns"]
    return pids[0] if pids else None


def kill_slirp(w0: int) -> None:
    """Kill W0's slirp4netns, and wait until W0 has started the next one."""
    old = wait_for(lambda: slirp_of(w0), what="a slirp4netns to kill")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: slirp_of(w0) not in (None, old), what="slirp4netns started again")


def test_the_network_comes_back_when_slirp4netns_ends(loop, default_server, http_server):
    """A slirp4netns that ends (an operator's kill, the OOM killer in the
    session's cgroup) takes tap0 with it: W0 starts another, and the
    session reaches the network again without knowing."""
    s = Session(loop, default_server, Work(), timeout=60)
    try:
        url = http_server + "/hello.txt"
        assert s.call("http_get", url)[0] == 200
        w0 = next(p for p in default_server.worker_pids()
                  if _session_var(p) == f"REMOTEMEDIA_SESSION={s.session_id}".encode())
        kill_slirp(w0)
        assert s.call("http_get", url) == (200, "hello from the test netns\n")
        assert "slirp4netns ended (status 9): started again" in default_server.log_text()
    finally:
        s.close()


def test_a_spare_whose_slirp4netns_ended_is_given_out_with_a_network(loop, default_server,
                                                                    http_server):
    """The same for a spare, which no client watches: the session that
    takes it has a network."""
    spares = wait_for(lambda: default_server.worker_pids(spares=True)
                      and [p for p in default_server.worker_pids(spares=True)
                           if p not in default_server.worker_pids()],
                      what="a spare")
    for w0 in spares:
        kill_slirp(w0)
    s = Session(loop, default_server, Work(), timeout=60)
    try:
        assert s.call("http_get", http_server + "/hello.txt")[0] == 200
    finally:
        s.close()


def test_a_slirp4netns_that_keeps_ending_is_left_ended(loop, servers, http_server):
    """One that ends four times within a minute is not started a fifth
    time; the session goes on without a network, and says why."""
    srv = servers.start(["--session-egress-allow", "10.215.0.0/16", "--session-pool", "0"])
    s = Session(loop, srv, Work(), timeout=60)
    try:
        w0 = srv.worker_pids()[0]
        for _ in range(3):
            kill_slirp(w0)
        os.kill(slirp_of(w0), signal.SIGKILL)
        wait_for(lambda: "the session has no network" in srv.log_text(),
                 what="the warning")
        assert slirp_of(w0) is None
        assert "ConnectionError" in str(s.error("http_get", http_server + "/hello.txt"))
        assert s.call("threads")[:3] == [0, 1, 4]
        assert "4 times within a minute: the session has no network" in srv.log_text()
    finally:
        s.close()
