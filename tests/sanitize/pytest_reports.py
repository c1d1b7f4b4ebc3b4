"""pytest plugin for make sanitize-test: say which test was running when
each sanitizer report file appeared in RM_SANITIZE_LOG_DIR; and point
test_rmctl.py, whose RMCTL is build/rmctl, at RM_BUILD's rmctl.

A report that a session-scoped server's worker writes late may be put down
to a later test: the attribution is a lead, not a verdict. The list goes to
the terminal summary and to RM_SANITIZE_LOG_DIR/../sanitize-attribution.txt
(outside the report directory, so that only reports are in it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

_DIR = os.environ.get("RM_SANITIZE_LOG_DIR")
_seen: set[str] = set()
_found: list[tuple[str, str]] = []


def _new_reports(nodeid: str) -> None:
    if not _DIR:
        return
    try:
        names = sorted(os.listdir(_DIR))
    except FileNotFoundError:
        return
    for name in names:
        if name not in _seen:
            _seen.add(name)
            _found.append((name, nodeid))


def pytest_collection_finish(session):
    """test_rmctl.py runs build/rmctl: make it the sanitized one."""
    build = os.environ.get("RM_BUILD")
    if not build:
        return
    for item in session.items:
        mod = getattr(item, "module", None)
        if mod is None or mod.__name__.rpartition(".")[2] != "test_rmctl":
            continue
        if not hasattr(mod, "RMCTL"):
            _found.append(("(note)", "test_rmctl.RMCTL is gone: the "
                           "sanitized rmctl was not run"))
            return
        mod.RMCTL = Path(build) / "rmctl"
        return


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _new_reports("(before " + item.nodeid + ")")
    yield
    _new_reports(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    _new_reports("(session teardown)")
    if _DIR:
        out = Path(_DIR).parent / "sanitize-attribution.txt"
        out.write_text("".join(f"{n}\t{t}\n" for n, t in _found))


def pytest_terminal_summary(terminalreporter):
    if not _found:
        return
    terminalreporter.section("sanitizer reports, by the test that was running")
    for name, nodeid in _found:
        terminalreporter.write_line(f"{name}: {nodeid}")
