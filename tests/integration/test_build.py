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


EMBED = ROOT / "scripts" / "embed-source"

# What embed-source must carry byte for byte: quotes, backslashes, a
# trigraph, a tab, control and non-ASCII characters, no final newline.
TRICKY_MODULE = ('"""Doc: \\\\ "quoted" ??= \'single\'."""\n'
                 'TEXT = "tab\\there, caf\\u00e9, \\x01"\n'
                 'SNOWMAN = "\u2603"  # non-ASCII in the file itself\n'
                 '# control characters: \x01 \x7f \r\n'
                 'def f(x):\n\treturn (x, f.__code__.co_filename, TEXT)')

DUMP_C = r"""
#include <stdio.h>
#include <string.h>
#include "embedded.h"

int
main(int argc, char **argv)
{
	FILE *f;

	if ((f = fopen(argv[1], "wb")) == NULL)
		return 1;
	fwrite(mod_source, 1, strlen(mod_source), f);
	fclose(f);
	if ((f = fopen(argv[2], "wb")) == NULL)
		return 1;
	fwrite(mod_source_code, 1, sizeof(mod_source_code), f);
	fclose(f);
	printf("%s %ld\n", mod_source_file, mod_source_magic);
	return 0;
}
"""


def test_embed_source_carries_the_text_and_the_compiled_code(tmp_path):
    """What the worker embeds, read back through a C compiler: the module's
    text byte for byte, and its code compiled under the given file name,
    which runs as the text does; the magic number is this Python's."""
    import importlib.util
    import marshal

    src = tmp_path / "mod.py"
    src.write_bytes(TRICKY_MODULE.encode("utf-8"))
    header = tmp_path / "embedded.h"
    with open(header, "wb") as out:
        subprocess.run([str(EMBED), str(src), "mod_source", "<test/mod.py>"],
                       stdout=out, check=True, timeout=60)
    (tmp_path / "dump.c").write_text(DUMP_C)
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(tmp_path / "dump"),
                    str(tmp_path / "dump.c")], check=True, timeout=60, cwd=tmp_path)
    r = subprocess.run([str(tmp_path / "dump"), str(tmp_path / "text"),
                        str(tmp_path / "code")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r
    name, magic = r.stdout.split()
    assert name == "<test/mod.py>"
    assert int(magic) == int.from_bytes(importlib.util.MAGIC_NUMBER, "little")
    assert (tmp_path / "text").read_bytes() == src.read_bytes()

    code = marshal.loads((tmp_path / "code").read_bytes())
    assert code.co_filename == "<test/mod.py>"
    built, fresh = {}, {}
    exec(code, built)
    exec(compile(src.read_bytes(), "<test/mod.py>", "exec"), fresh)
    assert built["f"](1) == fresh["f"](1)
    assert built["__doc__"] == fresh["__doc__"] and built["SNOWMAN"] == "\u2603"


def test_embed_source_refuses_what_does_not_compile(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("def f(:\n    pass\n")
    r = subprocess.run([str(EMBED), str(src), "bad_source", "<bad.py>"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{src}:1: invalid syntax" in r.stderr, r.stderr
