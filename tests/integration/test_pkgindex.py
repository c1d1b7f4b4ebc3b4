"""The test package index (pkgindex.py) against the host's real pip, offline:
hand-built wheels, a PEP 503 index on 127.0.0.1, and the exact pip command
line the server uses to install into a venv that has no pip of its own."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import socket
import subprocess
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from pkgindex import (
    HOST_PYTHON,
    PackageIndex,
    build_test_packages,
    build_wheel,
    make_venv,
    pip_env,
    pip_install_argv,
)

PIP_TIMEOUT = 90  # seconds; one install takes well under 2 s here


# --------------------------------------------------------------------------
# fixtures and helpers

@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return build_test_packages(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def index(wheels):
    with PackageIndex(w for ws in wheels.values() for w in ws) as idx:
        yield idx


@pytest.fixture
def venv(tmp_path):
    return make_venv(tmp_path / "venv")


def pip_install(python: Path, url: str, *reqs: str, home: Path):
    t0 = time.monotonic()
    r = subprocess.run(pip_install_argv(python, url, reqs), env=pip_env(home),
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=PIP_TIMEOUT)
    r.elapsed = time.monotonic() - t0
    r.output = r.stdout + r.stderr
    return r


def run_py(python: Path, code: str, home: Path) -> str:
    r = subprocess.run([str(python), "-c", code], env=pip_env(home),
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def installed(python: Path, home: Path) -> dict[str, str]:
    out = run_py(python, "import importlib.metadata as m\n"
                 "for d in m.distributions(): print(d.metadata['Name'], d.version)",
                 home)
    return dict(line.split() for line in out.splitlines() if line)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def b64hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(
        hashlib.sha256(data).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------
# wheels

def test_wheel_layout_and_record(tmp_path):
    w = build_wheel(tmp_path, "My.Odd_Name", "1.2.3",
                    {"odd/__init__.py": "X = 1\n", "odd_top.py": "Y = 2\n"},
                    requires=["rmtest-base>=1.0"],
                    extras={"fancy": ["rmtest-fancydep"],
                            "cli": ["rmtest-slow; python_version >= '3'"]})
    assert w.name == "my_odd_name-1.2.3-py3-none-any.whl"
    di = "my_odd_name-1.2.3.dist-info"
    with zipfile.ZipFile(w) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {"odd/__init__.py", "odd_top.py", f"{di}/METADATA",
                         f"{di}/WHEEL", f"{di}/RECORD"}
        rows = list(csv.reader(io.StringIO(zf.read(f"{di}/RECORD").decode())))
        assert {r[0] for r in rows} == names
        for path, digest, size in rows:
            if path == f"{di}/RECORD":
                assert digest == "" and size == ""
                continue
            data = zf.read(path)
            assert digest == b64hash(data) and not digest.endswith("=")
            assert int(size) == len(data)
        meta = zf.read(f"{di}/METADATA").decode()
        wheel = zf.read(f"{di}/WHEEL").decode()
    assert "Metadata-Version: 2.1\n" in meta
    assert "Name: My.Odd_Name\n" in meta and "Version: 1.2.3\n" in meta
    assert "Requires-Dist: rmtest-base>=1.0\n" in meta
    assert 'Requires-Dist: rmtest-fancydep ; extra == "fancy"\n' in meta
    assert ("Requires-Dist: rmtest-slow ; (python_version >= '3') "
            'and extra == "cli"\n') in meta
    assert "Provides-Extra: fancy\n" in meta and "Provides-Extra: cli\n" in meta
    for line in ("Wheel-Version: 1.0", "Root-Is-Purelib: true",
                 "Tag: py3-none-any"):
        assert line + "\n" in wheel
    assert re.search(r"^Generator: .+$", wheel, re.M)


def test_wheels_are_reproducible(tmp_path):
    a = build_wheel(tmp_path / "a", "rep", "1.0", {"rep.py": "A = 1\n"})
    b = build_wheel(tmp_path / "b", "rep", "1.0", {"rep.py": "A = 1\n"})
    assert a.read_bytes() == b.read_bytes()


def test_standard_set(wheels):
    assert {k: sorted(p.name for p in v) for k, v in wheels.items()} == {
        "rmtest-base": ["rmtest_base-1.0-py3-none-any.whl",
                        "rmtest_base-2.0-py3-none-any.whl"],
        "rmtest-app": ["rmtest_app-1.0-py3-none-any.whl"],
        "rmtest-extra": ["rmtest_extra-1.0-py3-none-any.whl"],
        "rmtest-fancydep": ["rmtest_fancydep-1.0-py3-none-any.whl"],
        "rmtest-broken": ["rmtest_broken-1.0-py3-none-any.whl"],
        "rmtest-slow": ["rmtest_slow-1.0-py3-none-any.whl"],
    }
    assert not zipfile.is_zipfile(wheels["rmtest-broken"][0])
    for name, ws in wheels.items():
        if name != "rmtest-broken":
            for w in ws:
                assert zipfile.is_zipfile(w)


# --------------------------------------------------------------------------
# the index, over HTTP

def test_index_pages(index, wheels):
    root = fetch(index.url).decode()
    assert index.url.startswith("http://127.0.0.1:") and index.url.endswith("/simple/")
    for name in wheels:
        assert f'<a href="{name}/">{name}</a>' in root
    page = fetch(index.url + "rmtest-base/").decode()
    links = re.findall(r'<a href="([^"#]+)#sha256=([0-9a-f]{64})">([^<]+)</a>', page)
    assert [l[2] for l in links] == ["rmtest_base-1.0-py3-none-any.whl",
                                     "rmtest_base-2.0-py3-none-any.whl"]
    for href, sha, text in links:
        assert href == f"../../files/{text}"
        body = fetch(urllib.request.urljoin(index.url + "rmtest-base/", href))
        assert hashlib.sha256(body).hexdigest() == sha
    assert index.requested()[-2:] == [
        "/files/rmtest_base-1.0-py3-none-any.whl",
        "/files/rmtest_base-2.0-py3-none-any.whl"]


def test_add_wheel_and_delay_and_close(tmp_path):
    w1 = build_wheel(tmp_path, "Late_Pkg", "1.0", {"late_pkg.py": "V = 1\n"})
    sl = build_wheel(tmp_path, "rmtest-slow", "1.0", {"rmtest_slow.py": ""})
    with PackageIndex([sl], slow={"RMTEST_slow": 0.5}) as idx:
        assert b"late-pkg" not in fetch(idx.url)
        url = idx.add_wheel(w1)
        assert url == idx.base_url + "/files/" + w1.name
        assert b'href="late-pkg/"' in fetch(idx.url)
        assert w1.name.encode() in fetch(idx.url + "late-pkg/")
        w2 = build_wheel(tmp_path, "late-pkg", "2.0", {"late_pkg.py": "V = 2\n"})
        idx.add_wheel(w2)
        page = fetch(idx.url + "late-pkg/").decode()
        assert w1.name in page and w2.name in page

        t0 = time.monotonic()
        fetch(idx.url + "rmtest-slow/")      # pages are not delayed
        fetch(url)                           # other projects are not
        fast = time.monotonic() - t0
        t0 = time.monotonic()
        fetch(idx.file_url(sl.name))
        slow = time.monotonic() - t0
        assert fast < 0.4 and slow >= 0.5, (fast, slow)

        # concurrent requests are all logged
        idx.clear_log()
        ts = [threading.Thread(target=fetch, args=(url,)) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert idx.count_files("late-pkg") == 16
        assert idx.file_requests() == [w1.name] * 16
        port, thread, root = idx.port, idx._thread, idx.root
    assert not thread.is_alive()
    assert not root.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --------------------------------------------------------------------------
# the real pip

def test_host_pip_supports_python_option():
    r = subprocess.run([HOST_PYTHON, "-m", "pip", "--version"], env=pip_env("/tmp"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.match(r"pip (\d+)\.(\d+)", r.stdout)
    assert m, r.stdout
    assert (int(m.group(1)), int(m.group(2))) >= (22, 3), \
        f"pip --python needs pip >= 22.3, host has: {r.stdout}"


def test_venv_has_no_pip(venv, tmp_path):
    out = run_py(venv, "import importlib.util as u; print(u.find_spec('pip'))",
                 tmp_path)
    assert out == "None"


def test_install_latest_dependency(index, venv, tmp_path):
    index.clear_log()
    r = pip_install(venv, index.url, "rmtest-app", home=tmp_path)
    assert r.returncode == 0, r.output
    assert "Successfully installed rmtest-app-1.0 rmtest-base-2.0" in r.output
    assert run_py(venv, "import rmtest_app; print(rmtest_app.hello())",
                  tmp_path) == "app 2.0"
    assert installed(venv, tmp_path) == {"rmtest-app": "1.0", "rmtest-base": "2.0"}
    # installed into the venv, not the host
    where = run_py(venv, "import rmtest_base; print(rmtest_base.__file__)", tmp_path)
    assert where.startswith(str(venv.parent.parent))
    assert sorted(index.file_requests()) == [
        "rmtest_app-1.0-py3-none-any.whl", "rmtest_base-2.0-py3-none-any.whl"]
    assert "/simple/rmtest-app/" in index.requested()
    assert "/simple/rmtest-base/" in index.requested()
    print(f"one install of rmtest-app took {r.elapsed:.2f}s")


def test_install_pinned_dependency(index, venv, tmp_path):
    index.clear_log()
    r = pip_install(venv, index.url, "rmtest-app", "rmtest-base==1.0", home=tmp_path)
    assert r.returncode == 0, r.output
    assert run_py(venv, "import rmtest_app; print(rmtest_app.hello())",
                  tmp_path) == "app 1.0"
    assert index.count_files("rmtest-base") == 1
    assert index.file_requests("rmtest-base") == ["rmtest_base-1.0-py3-none-any.whl"]


def test_install_extra(index, venv, tmp_path):
    index.clear_log()
    r = pip_install(venv, index.url, "rmtest-extra[fancy]", home=tmp_path)
    assert r.returncode == 0, r.output
    assert installed(venv, tmp_path) == {"rmtest-extra": "1.0",
                                         "rmtest-fancydep": "1.0"}
    assert run_py(venv, "import rmtest_extra; print(rmtest_extra.has_fancy())",
                  tmp_path) == "True"
    assert index.count_files("rmtest-fancydep") == 1


def test_install_without_extra(index, venv, tmp_path):
    r = pip_install(venv, index.url, "rmtest-extra", home=tmp_path)
    assert r.returncode == 0, r.output
    assert installed(venv, tmp_path) == {"rmtest-extra": "1.0"}
    reqs = run_py(venv, "import importlib.metadata as m; "
                  "print(m.requires('rmtest-extra'))", tmp_path)
    assert reqs == """['rmtest-fancydep ; extra == "fancy"']"""


def test_install_broken_fails(index, venv, tmp_path):
    index.clear_log()
    r = pip_install(venv, index.url, "rmtest-broken", home=tmp_path)
    assert r.returncode != 0, r.output
    assert "rmtest-broken" in r.stderr or "rmtest_broken" in r.stderr, r.output
    assert "invalid" in r.output.lower(), r.output
    assert index.file_requests() == ["rmtest_broken-1.0-py3-none-any.whl"]
    assert installed(venv, tmp_path) == {}


def test_install_unknown_fails(index, venv, tmp_path):
    index.clear_log()
    r = pip_install(venv, index.url, "rmtest-does-not-exist", home=tmp_path)
    assert r.returncode != 0, r.output
    assert "No matching distribution" in r.output, r.output
    assert index.requested() == ["/simple/rmtest-does-not-exist/"]
    assert index.file_requests() == []


def test_install_slow_is_observably_slow(wheels, venv, tmp_path):
    with PackageIndex(wheels["rmtest-slow"], slow={"rmtest-slow": 1.0}) as idx:
        r = pip_install(venv, idx.url, "rmtest-slow", home=tmp_path)
        assert r.returncode == 0, r.output
        assert r.elapsed >= 1.0
        assert idx.file_requests() == ["rmtest_slow-1.0-py3-none-any.whl"]
    assert run_py(venv, "import rmtest_slow; print(rmtest_slow.SLOW)",
                  tmp_path) == "True"
