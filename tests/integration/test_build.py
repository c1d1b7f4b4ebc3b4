"""The Makefile on a machine that has nothing installed yet: `make demo`
installs the dependencies first, so until then it must not print pkg-config
noise, and a goal that builds says what to run instead of failing later."""
from __future__ import annotations

import os
import subprocess

from serverlib import ROOT


def make_without_pkg_config(tmp_path, *goals: str) -> subprocess.CompletedProcess:
    """make -n GOALS with a PATH that has make and a shell, no pkg-config."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("make", "sh"):
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to("/usr/bin/make" if tool == "make" else "/bin/sh")
    return subprocess.run(["make", "-n", "-C", str(ROOT), *goals],
                          env={"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")},
                          capture_output=True, text=True, timeout=60)


def test_demo_before_install_deps_is_quiet(tmp_path):
    """Reading the Makefile runs pkg-config, which is not there yet: that
    is silent, and install-deps is the first thing demo does. (Under -n
    the sub-make that builds runs too, install-deps not having run, and
    says what to run.)"""
    r = make_without_pkg_config(tmp_path, "demo")
    out = r.stdout + r.stderr
    assert "No such file or directory" not in out and "was not found" not in out, out
    commands = [line for line in r.stdout.splitlines() if not line.startswith("make")]
    assert commands[0] == "scripts/install-deps", r.stdout


def test_build_before_install_deps_says_what_to_run(tmp_path):
    r = make_without_pkg_config(tmp_path, "all")
    assert r.returncode != 0
    assert "run scripts/install-deps first" in r.stderr, r.stderr
