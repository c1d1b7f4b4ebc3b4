"""Real wheels and a real PEP 503 "simple" package index on 127.0.0.1, built
and served by the tests themselves (no network, no setuptools, no pip needed to
build anything).

    wheels = build_test_packages(tmp / "wheels")
    with PackageIndex(w for ws in wheels.values() for w in ws) as idx:
        ...  pip install --index-url idx.url rmtest-app
        assert idx.count_files("rmtest-base") == 1

Also the exact pip invocation the server uses (`pip_install_argv`,
`pip_env`), so tests of the server and tests of this module agree on it.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import os
import re
import socket
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Mapping, Sequence

HOST_PYTHON = "/usr/bin/python3"
GENERATOR = "rmtest-pkgindex 1.0"
# A fixed timestamp keeps wheels byte-identical between builds.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------
# names

def normalize_project(name: str) -> str:
    """PEP 503 normalized project name: runs of -_. become '-', lowercase."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_dist_name(name: str) -> str:
    """Distribution name as written in wheel / dist-info file names."""
    return normalize_project(name).replace("-", "_")


def project_of_wheel(filename: str) -> str:
    """PEP 503 normalized project name of a wheel file name."""
    return normalize_project(Path(filename).name.split("-", 1)[0])


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# wheels

def _metadata(name: str, version: str, requires: Sequence[str],
              extras: Mapping[str, Sequence[str]]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: test package {name}",
    ]
    for req in requires:
        lines.append(f"Requires-Dist: {req}")
    for extra in extras:
        lines.append(f"Provides-Extra: {extra}")
    for extra, reqs in extras.items():
        for req in reqs:
            # An existing marker must be combined, not replaced.
            if ";" in req:
                base, marker = req.split(";", 1)
                req = f'{base.strip()} ; ({marker.strip()}) and extra == "{extra}"'
            else:
                req = f'{req} ; extra == "{extra}"'
            lines.append(f"Requires-Dist: {req}")
    return "\n".join(lines) + "\n\n"


def _wheel_file() -> str:
    return ("Wheel-Version: 1.0\n"
            f"Generator: {GENERATOR}\n"
            "Root-Is-Purelib: true\n"
            "Tag: py3-none-any\n\n")


def _zinfo(arcname: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = (0o100644 & 0xFFFF) << 16
    return zi


def wheel_filename(name: str, version: str) -> str:
    return f"{wheel_dist_name(name)}-{version}-py3-none-any.whl"


def build_wheel(outdir, name: str, version: str, modules: Mapping[str, str],
                requires: Sequence[str] = (),
                extras: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write a valid pure-Python wheel `{dist}-{version}-py3-none-any.whl`
    into `outdir` and return its path.

    `modules` maps archive paths ("pkg/__init__.py", "mod.py") to source
    text; `requires` are Requires-Dist lines; `extras` maps an extra name to
    the requirements it adds."""
    extras = dict(extras or {})
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dist = wheel_dist_name(name)
    distinfo = f"{dist}-{version}.dist-info"

    files: list[tuple[str, bytes]] = []
    for path, source in modules.items():
        arc = path.replace(os.sep, "/").lstrip("/")
        if not arc or ".." in arc.split("/"):
            raise ValueError(f"bad module path {path!r}")
        data = source.encode() if isinstance(source, str) else bytes(source)
        files.append((arc, data))
    files.append((f"{distinfo}/METADATA",
                  _metadata(name, version, requires, extras).encode()))
    files.append((f"{distinfo}/WHEEL", _wheel_file().encode()))

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arc, data in files:
        writer.writerow([arc, _record_hash(data), len(data)])
    writer.writerow([f"{distinfo}/RECORD", "", ""])
    files.append((f"{distinfo}/RECORD", record.getvalue().encode()))

    target = outdir / wheel_filename(name, version)
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arc, data in files:
            zf.writestr(_zinfo(arc), data)
    os.replace(tmp, target)
    return target


def corrupt_wheel(path: Path) -> Path:
    """Truncate a wheel so it is no longer a zip archive (the central
    directory is gone); pip downloads it, then fails to install it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def build_test_packages(outdir) -> dict[str, list[Path]]:
    """The standard packages the tests use; returns project name -> wheels.

    rmtest-base 1.0 and 2.0   module rmtest_base, VERSION = "1.0"/"2.0"
    rmtest-app 1.0            requires rmtest-base>=1.0; rmtest_app.hello()
                              returns "app " + rmtest_base.VERSION
    rmtest-extra 1.0          extra "fancy" requires rmtest-fancydep
    rmtest-fancydep 1.0       module rmtest_fancydep
    rmtest-broken 1.0         a truncated, not-a-zip wheel: install fails
    rmtest-slow 1.0           normal wheel (serve it with PackageIndex(slow=))
    """
    out = Path(outdir)
    pk: dict[str, list[Path]] = {}

    def add(name, *a, **kw):
        pk.setdefault(name, []).append(build_wheel(out, name, *a, **kw))

    for v in ("1.0", "2.0"):
        add("rmtest-base", v, {"rmtest_base/__init__.py": f'VERSION = "{v}"\n'})
    add("rmtest-app", "1.0", {
        "rmtest_app/__init__.py":
            "import rmtest_base\n\n\n"
            "def hello():\n"
            '    return "app " + rmtest_base.VERSION\n',
    }, requires=["rmtest-base>=1.0"])
    add("rmtest-extra", "1.0", {
        "rmtest_extra/__init__.py":
            "def has_fancy():\n"
            "    try:\n"
            "        import rmtest_fancydep  # noqa: F401\n"
            "    except ImportError:\n"
            "        return False\n"
            "    return True\n",
    }, extras={"fancy": ["rmtest-fancydep"]})
    add("rmtest-fancydep", "1.0",
        {"rmtest_fancydep/__init__.py": 'FANCY = "yes"\n'})
    add("rmtest-broken", "1.0",
        {"rmtest_broken/__init__.py": 'BROKEN = False\n'})
    corrupt_wheel(pk["rmtest-broken"][0])
    add("rmtest-slow", "1.0", {"rmtest_slow/__init__.py": 'SLOW = True\n'})
    return pk


# --------------------------------------------------------------------------
# the index

class _Handler(SimpleHTTPRequestHandler):
    index: "PackageIndex"  # set on the per-index subclass

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _before(self) -> None:
        self.index._record(self.command, self.path)
        delay = self.index._delay_for(self.path)
        if delay > 0:
            time.sleep(delay)

    def do_GET(self):
        self._before()
        super().do_GET()

    def do_HEAD(self):
        self._before()
        super().do_HEAD()


class PackageIndex:
    """A PEP 503 simple index over a directory of wheels, served over HTTP on
    127.0.0.1 (ephemeral port) from a background thread.

    Layout under `root`: files/<wheel>, simple/index.html,
    simple/<normalized-name>/index.html with anchors
    `<a href="../../files/X.whl#sha256=HEX">X.whl</a>`.

    `slow` maps a project name (any spelling) or a literal request path
    ("/files/x.whl") to seconds of delay before the server answers; project
    names delay the wheel downloads of that project only. Keep delays well
    below pip's 15 s socket timeout.

    `requests` is the log of request paths (GET and HEAD) in order; read it
    through `requested()`, `file_requests()` or `count_files()`.
    """

    def __init__(self, wheels: Iterable[os.PathLike | str] = (), root=None,
                 slow: Mapping[str, float] | None = None,
                 bind: str = "127.0.0.1") -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="rm-pkgindex-")
                         if root is None else root)
        self.files = self.root / "files"
        self.simple = self.root / "simple"
        self.files.mkdir(parents=True, exist_ok=True)
        self.simple.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.slow: dict[str, float] = {}
        for key, secs in (slow or {}).items():
            k = key if key.startswith("/") else normalize_project(key)
            self.slow[k] = float(secs)
        for w in wheels:
            self._copy_in(Path(w))
        self._write_pages()

        handler = type("Handler", (_Handler,), {"index": self})

        def make(*a, **kw):
            return handler(*a, directory=str(self.root), **kw)

        server_class = ThreadingHTTPServer
        if ":" in bind:
            server_class = type("Server6", (ThreadingHTTPServer,),
                                {"address_family": socket.AF_INET6})
        self._httpd = server_class((bind, 0), make)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{netloc}:{self.port}"
        self.url = f"{self.base_url}/simple/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"pkgindex-{self.port}", daemon=True)
        self._thread.start()
        self._closed = False

    # -- content -----------------------------------------------------------

    def _copy_in(self, path: Path) -> Path:
        if not path.name.endswith(".whl"):
            raise ValueError(f"not a wheel: {path}")
        dest = self.files / path.name
        if path.resolve() != dest.resolve():
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        return dest

    def add_wheel(self, path) -> str:
        """Add (or replace) a wheel and regenerate the pages; returns the
        file's URL."""
        with self._lock:
            dest = self._copy_in(Path(path))
            self._write_pages()
        return self.file_url(dest.name)

    def add_sdist(self, project: str, filename: str,
                  files: Mapping[str, bytes]) -> None:
        """Add an sdist, filename (.tar.gz) of files (archive path ->
        content), and a page of its own for project, linking to it alone."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
        (self.files / filename).write_bytes(buf.getvalue())
        page = self.simple / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            "<!DOCTYPE html>\n<html><body>\n"
            f'<a href="../../files/{filename}">{filename}</a><br>\n</body></html>\n')

    def file_url(self, filename: str) -> str:
        return f"{self.base_url}/files/{filename}"

    def projects(self) -> dict[str, list[str]]:
        """Normalized project name -> sorted wheel file names."""
        out: dict[str, list[str]] = {}
        for f in sorted(self.files.glob("*.whl")):
            out.setdefault(project_of_wheel(f.name), []).append(f.name)
        return out

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def _write_pages(self) -> None:
        head = ('<!DOCTYPE html>\n<html>\n<head>\n'
                '<meta name="pypi:repository-version" content="1.0">\n'
                '<title>{}</title>\n</head>\n<body>\n')
        projects = self.projects()
        body = "".join(
            f'<a href="{html.escape(p)}/">{html.escape(p)}</a>\n'
            for p in sorted(projects))
        self._atomic_write(self.simple / "index.html",
                           head.format("Simple index") + body + "</body>\n</html>\n")
        for proj, names in projects.items():
            links = "".join(
                f'<a href="../../files/{html.escape(n)}#sha256='
                f'{sha256_file(self.files / n)}">{html.escape(n)}</a><br>\n'
                for n in names)
            self._atomic_write(
                self.simple / proj / "index.html",
                head.format(f"Links for {html.escape(proj)}") + links
                + "</body>\n</html>\n")

    # -- request log and delays --------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(path if method == "GET" else f"{method} {path}")

    def _delay_for(self, path: str) -> float:
        if not self.slow:
            return 0.0
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean in self.slow:
            return self.slow[clean]
        if clean.startswith("/files/"):
            return self.slow.get(project_of_wheel(clean[len("/files/"):]), 0.0)
        return 0.0

    def requested(self) -> list[str]:
        """A snapshot of the request log."""
        with self._lock:
            return list(self.requests)

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def file_requests(self, project: str | None = None) -> list[str]:
        """Wheel file names fetched (GET), optionally of one project."""
        out = []
        for p in self.requested():
            if p.startswith("/files/"):
                name = p[len("/files/"):].split("#", 1)[0]
                if project is None or project_of_wheel(name) == normalize_project(project):
                    out.append(name)
        return out

    def count_files(self, project: str | None = None) -> int:
        return len(self.file_requests(project))

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PackageIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------
# the pip invocation the server uses

PIP_INSTALL_FLAGS = ("--no-input", "--disable-pip-version-check",
                     "--only-binary=:all:")


def pip_env(home) -> dict[str, str]:
    """The whole environment pip runs with (as `env -i` would leave it)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home),
            "PIP_CONFIG_FILE": "/dev/null"}


def pip_install_argv(target_python, index_url: str,
                     reqs: Sequence[str]) -> list[str]:
    """The host's pip installing into another interpreter's environment."""
    return [HOST_PYTHON, "-m", "pip", "--isolated",
            "--python", str(target_python), "install", *PIP_INSTALL_FLAGS,
            "--index-url", index_url, *reqs]


def make_venv(path, timeout: float = 60) -> Path:
    """A venv without pip; returns its interpreter."""
    subprocess.run([HOST_PYTHON, "-m", "venv", "--without-pip", str(path)],
                   check=True, timeout=timeout, env=pip_env(Path(path).parent),
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Path(path) / "bin" / "python"
