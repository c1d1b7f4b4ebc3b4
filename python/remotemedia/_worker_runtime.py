"""The worker-side runtime of remotemedia: object semantics for one session.

remotemedia-worker compiles this file into its binary, imports it as
``_remotemedia_runtime`` in its embedded CPython and calls :func:`main`.
Everything that is protocol (framing, chunking, the socket, the output
capture, the sandbox) stays in C, behind the builtin module ``_rmworker``:

- ``_rmworker.pump()`` reads what the front sent and returns events:
  ``("open", fmt, obj, py_ver, cp_ver, source, class_name, init_args_json,
  buffer_sizes)``, ``("call", id, name, kind, args, timeout_ms,
  buffer_sizes)``, ``("pull", id, n,
  timeout_ms)``, ``("cancel", id)``, ``("close",)`` and ``("eof",)``;
- ``_rmworker.send_*`` answer: Ready, Result, Error, Item, End, Fatal.

This module loads the object, builds its attribute map, and runs every call
on one loop, on the main thread: sync methods one at a time in arrival
order, async methods as interleaving tasks, generators only as far as their
Pull credit allows. Deadlines come from ``setitimer`` and a SIGALRM handler
that raises ``TimeoutError`` into the late call.

The loop is an asyncio loop from the Open on if the object's pickle or
source holds the word asyncio (as code that uses it does): its
``__init__`` or ``__setstate__`` and its methods find the loop running.
If its packages imported asyncio by the time it is loaded, the loop runs
from the first call on. Otherwise the loop is a plain one
(:class:`_PlainLoop`) until the session's first async method or async
generator, and then an asyncio loop for good. Importing asyncio costs a
worker about 2 MiB of private memory and 20 ms of its start-up, and many
sessions never use it.

It is not importable outside the worker (``_rmworker`` exists only there).
"""

import _json
import _pickle
import _signal
import _weakref
import builtins
import collections
import collections.abc
import functools
import io
import os
import select
import sys
import time
import types

import _remotemedia_oob as _oob
import _rmworker

# Every session's worker holds what this module imports, so it imports
# only what every session needs (pickle's and json's C halves, not their
# modules, which bring re). What some sessions need comes with its first
# use: json, traceback and cloudpickle; logging and linecache are set up
# once something imports them (_AfterImport). An idle worker holds about
# half the private memory it held with all of them.

FORMAT_PICKLE = 0
FORMAT_JSON = 1

CALL_METHOD = 0
CALL_GET = 1

ATTR_METHOD = 1
ATTR_ASYNC_METHOD = 2
ATTR_GENERATOR = 3
ATTR_ASYNC_GENERATOR = 4
ATTR_PROPERTY = 5
ATTR_ATTRIBUTE = 6

INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9
INTERNAL = 13

LOG_WARN = 1
LOG_INFO = 2
LOG_DEBUG = 3

SERVER_PYTHON = "%d.%d" % sys.version_info[:2]
SOURCE_MODULE = "__remotemedia__"
SOURCE_FILE = "<remotemedia source>"
# How long shutdown waits for tasks and async generators to finish.
SHUTDOWN_WAIT = 2.0
# The alarm may fire a little before the deadline it was set for.
ALARM_SLACK = 0.001

_RUNTIME_FILE = (lambda: None).__code__.co_filename


# Values that pickle alone writes as cloudpickle would, with nothing out
# of band and nothing to find in them: results take a shorter path. By the
# types' ids: a user's metaclass may make its classes unhashable.
_PLAIN = frozenset(map(id, (type(None), bool, int, float, complex, str)))

# Seconds of user code after which the rest of a batch of events looks for
# what came meanwhile (Runtime._run_events).
_REREAD = 0.001

# The asyncio module, once the session has needed it (Runtime._use_asyncio).
asyncio = None


# Pickles, with cloudpickle only where it is needed --------------------------------
#
# Importing cloudpickle costs a worker about 1 MiB of private memory (it
# brings typing, logging, platform, uuid and dis) and 12 ms. What a
# client's cloudpickle writes loads with pickle and the few functions of
# cloudpickle's that its pickles name, which this section has as well
# (_CP_LIGHT); a value whose classes and functions are all importable
# pickles with pickle alone, as cloudpickle would write it. Anything else
# imports cloudpickle.


class _ByValue(Exception):
    """A class or function that cloudpickle writes by value."""


# Classes that have no name to import them by, which pickle writes as
# cloudpickle does.
_PICKLE_WRITES = (type(None), type(...), type(NotImplemented))


def _by_reference(obj):
    """Whether cloudpickle writes this class or function by reference, as
    pickle does: by its name in a module that is not __main__ nor one made
    at run time, and that has it under that name (or one of the classes
    that pickle writes as cloudpickle does without a name)."""
    if any(obj is known for known in _PICKLE_WRITES):
        return True
    try:
        module_name = obj.__module__
        if module_name == "__main__":
            return False
        module = sys.modules[module_name]
        if (getattr(module, "__file__", None) is None
                and getattr(module, "__spec__", None) is None):
            return False
        found = module
        for part in obj.__qualname__.split("."):
            if part == "<locals>":
                return False
            found = getattr(found, part)
        return found is obj
    except Exception:
        return False


class _Pickler(_pickle.Pickler):
    """pickle, stopped (_ByValue) by the first class or function that
    cloudpickle would write by value. Everything else cloudpickle treats
    its own way either fails in pickle too or comes out the same."""

    def reducer_override(self, obj):
        t = type(obj)
        if t is types.MethodType:
            # pickle writes getattr(self, name) and never looks at the
            # function, which cloudpickle writes itself.
            raise _ByValue
        if ((t is types.FunctionType or issubclass(t, type))
                and not _by_reference(obj)):
            raise _ByValue
        return NotImplemented


def _cloudpickle():
    import cloudpickle
    return cloudpickle


def _dumps(value, buffers=None):
    """value pickled (protocol 5) as cloudpickle writes it. With a list of
    buffers, its large buffers go out of band, appended to it as contiguous
    memoryviews (_remotemedia_oob); without, all of it is in the pickle."""
    if id(type(value)) in _PLAIN:
        return _pickle.dumps(value, protocol=5)
    keep = None
    if buffers is not None:
        value = _oob.wrap_large(value)
        keep = _oob.collector(buffers)
    if "cloudpickle" not in sys.modules:
        had = len(buffers) if buffers is not None else 0
        f = io.BytesIO()
        try:
            _Pickler(f, protocol=5, buffer_callback=keep).dump(value)
            return f.getvalue()
        except Exception:
            # By value, or not picklable: cloudpickle says which.
            if buffers is not None:
                del buffers[had:]
    return _cloudpickle().dumps(value, protocol=5, buffer_callback=keep)


def _cp_builtin_type(name):
    return type if name == "ClassType" else getattr(types, name)


def _cp_cell(*value):
    return types.CellType(*value)


def _cp_subimport(name):
    __import__(name)
    return sys.modules[name]


def _cp_dynamic_subimport(name, variables):
    module = types.ModuleType(name)
    module.__dict__.update(variables)
    module.__dict__["__builtins__"] = builtins.__dict__
    return module


def _cp_function(code, namespace, name, defaults, closure):
    namespace["__builtins__"] = builtins.__dict__
    return types.FunctionType(code, namespace, name, defaults, closure)


# Classes rebuilt here, by the id that the client's cloudpickle gave each:
# a class that comes again is the class rebuilt the first time, as with
# cloudpickle. Handed to cloudpickle once it is imported (_cp_imported).
# Weak references by id, as a weakref.WeakValueDictionary holds them: the
# weakref module was 128 KiB of every idle session.
_cp_classes = {}


def _cp_forget(ref, tracker_id):
    if _cp_classes.get(tracker_id) is ref:
        del _cp_classes[tracker_id]


def _cp_class(metaclass, name, bases, namespace, tracker_id, extra):
    cls = types.new_class(name, bases, {"metaclass": metaclass},
                          lambda ns: ns.update(namespace))
    if tracker_id is None:
        return cls
    ref = _cp_classes.get(tracker_id)
    known = ref() if ref is not None else None
    if known is not None:
        return known
    _cp_classes[tracker_id] = _weakref.ref(
        cls, lambda r, tracker_id=tracker_id: _cp_forget(r, tracker_id))
    return cls


def _cp_class_setstate(cls, state):
    attrs = state[0]
    for name, value in attrs.items():
        if name != "_abc_impl":
            setattr(cls, name, value)
    for subclass in attrs.get("_abc_impl") or ():
        cls.register(subclass)
    return cls


def _cp_function_setstate(func, state):
    attrs, slots = state
    func.__dict__.update(attrs)
    func.__globals__.update(slots["__globals__"])
    func.__globals__["__builtins__"] = builtins.__dict__
    for cell, sent in zip(func.__closure__ or (), slots["__closure__"] or ()):
        try:
            cell.cell_contents = sent.cell_contents
        except ValueError:  # an empty cell stays empty
            pass
    for name, value in slots.items():
        if name not in ("__globals__", "__closure__",
                        "_cloudpickle_submodules"):
            setattr(func, name, value)


# What cloudpickle 2's pickles name, from its two modules: the rest (enums,
# type variables, dict views, and the pickles of other versions) imports
# cloudpickle.
_CP_MODULES = ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast")
_CP_LIGHT = {
    "_builtin_type": _cp_builtin_type,
    "_make_empty_cell": _cp_cell,
    "_make_cell": _cp_cell,
    "subimport": _cp_subimport,
    "dynamic_subimport": _cp_dynamic_subimport,
    "_make_function": _cp_function,
    "_make_skeleton_class": _cp_class,
    "_class_setstate": _cp_class_setstate,
    "_function_setstate": _cp_function_setstate,
}
# Whether _CP_LIGHT stands for the session's cloudpickle (version 2), and
# whether cloudpickle has since been imported and taken _cp_classes.
_cp_light = False
_cp_handed = False


def _cp_imported(module):
    """cloudpickle.cloudpickle was imported: hand it the classes rebuilt
    here, so that it sends them back by the client's ids."""
    global _cp_handed
    try:
        while _cp_classes:
            tracker_id, ref = _cp_classes.popitem()
            cls = ref()
            if cls is not None:
                module._lookup_class_or_track(tracker_id, cls)
    except Exception as exc:
        _log(LOG_WARN, "cloudpickle took no classes: %r" % (exc,))
    _cp_handed = True


class _Unpickler(_pickle.Unpickler):
    """pickle's unpickler, with _CP_LIGHT for cloudpickle's functions while
    cloudpickle is not imported."""

    def find_class(self, module, name):
        if _cp_light and not _cp_handed and module in _CP_MODULES:
            light = _CP_LIGHT.get(name)
            if light is not None:
                return light
        return super().find_class(module, name)


def _rehearse_loading():
    """Run what loading an object sent by value runs, once (_preload): the
    first time costs about 0.25 ms more than the next."""
    def inner():
        return cls
    _Unpickler(io.BytesIO(_pickle.dumps(types.SimpleNamespace))).load()
    func = _cp_function(inner.__code__, {}, None, None, (_cp_cell(),))
    _cp_function_setstate(func, ({}, {
        "__globals__": {}, "__closure__": (_cp_cell(1),), "__name__": "f",
        "__qualname__": "R.f", "__module__": "_remotemedia_rehearsal",
        "__doc__": None, "__defaults__": None, "__kwdefaults__": None,
        "__annotations__": {}, "_cloudpickle_submodules": []}))
    cls = _cp_class(_cp_builtin_type("ClassType"), "R", (object,), {},
                    "rehearsal", None)
    _cp_class_setstate(cls, ({"f": func, "__doc__": None}, {}))
    _cp_classes.pop("rehearsal", None)
    _cp_subimport("sys")


def _loads(data, sizes=()):
    """Unpickle data: a pickle followed by out-of-band buffers of these
    sizes, which become the unpickled arrays' memory."""
    if not sizes:
        if b"cloudpickle" not in data:
            return _pickle.loads(data)
        return _Unpickler(io.BytesIO(data)).load()
    try:
        return _oob.loads(data, sizes, _Unpickler)
    except _oob.MalformedValue as exc:
        raise ValueError(str(exc)) from None  # a type clients know


# The version of cloudpickle that _preload found, for the Open.
_cp_version = None


def _find_spec(name, path=None, target=None, skip=None):
    """The spec that importing name would use, from sys.meta_path's finders
    (but skip), or None; importlib.util.find_spec without importing
    importlib.util, nor importing the parents of name."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if finder is not skip and find is not None:
            spec = find(name, path, target)
            if spec is not None:
                return spec
    return None


def _cloudpickle_version():
    """The version of the cloudpickle that an import would load, read from
    its __init__.py without importing it, or from the module if that
    fails; ImportError if there is none. Finding it takes ~0.4 ms, which
    a spare spends before its Open."""
    cp = sys.modules.get("cloudpickle")
    if cp is not None:
        return cp.__version__
    if _cp_version is not None:
        return _cp_version
    try:
        spec = _find_spec("cloudpickle")
    except Exception:
        return _cloudpickle().__version__  # the import says what is wrong
    if spec is None:
        raise ImportError("No module named 'cloudpickle'")
    if (spec.origin or "").endswith("__init__.py"):
        try:
            with open(spec.origin, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("__version__"):
                        version = line.partition("=")[2].strip().strip("'\"")
                        if version:
                            return version
        except (OSError, ValueError):
            pass
    return _cloudpickle().__version__


def _log(level, message):
    """Write to the worker's own log (the front's stderr), not the client's."""
    try:
        _rmworker.log(level, message)
    except Exception:
        pass


def _flush_stdio():
    """Push what print() buffered into the capture pipes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# The session's stderr, as the worker set it up (user code may swap
# sys.stderr for a while, as contextlib.redirect_stderr does).
_stderr = None


def _setup_stdio():
    """Line-buffer stdout/stderr; on a fatal signal (a C extension's
    SIGSEGV, an abort), write the Python traceback to stderr, which the
    front sends on even after the worker's death."""
    global _stderr
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    _stderr = sys.stderr
    import faulthandler
    faulthandler.enable()


# The host's site-packages and the directories their .pth files add:
# what an environment built without them hides at its Open.
_host_paths = set()


def _setup_site(host_dirs=None):
    """Give the session the sys.path and builtins that site would, without
    the host's start-up hooks.

    CPython starts without site (worker_py.c), because site would run the
    host's .pth files whole, and their import lines are the host's
    start-up hooks, not the session's: here matplotlib's, setuptools' and
    a CA injector's cost every session 0.25 MiB of private memory,
    importing importlib.util, contextlib, _distutils_hack and certifi. So
    this does what site.main() does, but of the host's site-packages
    (host_dirs, or site's list) it takes only the directories that their
    .pth files name, and it runs no sitecustomize. The session's own
    environment has its .pth files run at the Open (_run_env_pth)."""
    import site
    site.ENABLE_USER_SITE = False
    if host_dirs is None:
        host_dirs = site.getsitepackages()
    known = site.removeduppaths()
    for d in host_dirs:
        d, case = site.makepath(d)
        if case in known or not os.path.isdir(d):
            continue
        sys.path.append(d)
        known.add(case)
        _host_paths.add(d)
        for name in _pth_names(d):
            _host_pth(site, d, name, known)
    site.setquit()
    site.setcopyright()
    site.sethelper()


def _run_env_pth(env_dirs):
    """Run the .pth files of the session's environment (env_dirs) whole, as
    a venv's Python runs its site-packages' ones: the directories they
    name come before the host's site-packages, and their import lines run.
    Returns whether sys.path changed.

    This happens at the Open, so that what they print reaches the session
    (a spare that prints before its Open is taken for a failed one), and
    after an environment built without the host's packages has them hidden.
    A file that fails is reported on the session's stderr as site reports
    it, and the others still run: here even a SystemExit does not end the
    worker (a KeyboardInterrupt still goes through, as in site)."""
    if not env_dirs:
        return False
    import site
    before = list(sys.path)
    known = {site.makepath(p)[1] for p in before}
    for d in env_dirs:
        for name in _pth_names(d):
            try:
                site.addpackage(d, name, known)
            except KeyboardInterrupt:
                raise
            except BaseException:
                _pth_failed(os.path.join(d, name))
    # What they added behind the host's directories goes before them
    # (an import line may have moved other entries: those stay).
    first = next((i for i, p in enumerate(sys.path) if p in _host_paths),
                 None)
    if first is not None:
        old = set(before)
        tail = sys.path[first:]
        late = [p for p in tail if p not in old]
        if late:
            sys.path[first:] = late + [p for p in tail if p in old]
    return sys.path != before


def _pth_failed(fullname):
    """Say on the session's stderr, as site does, that a .pth file failed."""
    try:
        import traceback
        print("Error processing %s:" % fullname, file=sys.stderr)
        for record in traceback.format_exception(*sys.exc_info()):
            for line in record.splitlines():
                print("  " + line, file=sys.stderr)
        print("\nRemainder of file ignored", file=sys.stderr)
    except Exception:
        pass  # its stderr is gone: the Open goes on without the report


def _pth_names(sitedir):
    """The .pth files of a site directory, in the order site reads them."""
    try:
        return sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
    except OSError:
        return []


def _host_pth(site, sitedir, name, known):
    """Add the directories that a host .pth file names, as site.addpackage
    adds them, without running its import lines. A file that cannot be
    read is left out, and the server's debug log says so."""
    fullname = os.path.join(sitedir, name)
    try:
        with io.TextIOWrapper(io.open_code(fullname), encoding="locale") as f:
            lines = f.readlines()
    except (OSError, ValueError) as exc:
        # Every worker would say it: the server's debug log does.
        _log(LOG_DEBUG, "%s: %s: %s (ignored)" % (
            fullname, type(exc).__name__, exc))
        return
    for line in lines:
        if line.startswith(("#", "import ", "import\t")) or not line.strip():
            continue
        d, case = site.makepath(sitedir, line.rstrip())
        if case not in known and os.path.exists(d):
            sys.path.append(d)
            known.add(case)
            _host_paths.add(d)


def _setup_logging(logging):
    """Send the root logger to stderr, once the session imports logging."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = logging.StreamHandler(_stderr or sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root.addHandler(handler)


# Source run by Opens of source, for linecache (tracebacks, inspect):
# filename -> linecache entry.
_sources = {}


def _setup_linecache(linecache):
    linecache.cache.update(_sources)


# Python children of the session start as python3 does, with site. The
# worker runs without it (_setup_site says why), and subprocess would pass
# that on to them as -S (_args_from_interpreter_flags, which multiprocessing
# and loky use): a child could not import the host's packages before it had
# the session's sys.path. loky's resource tracker, which imports joblib
# first, died so, and sklearn's fits with n_jobs failed. A comment, not a
# docstring: every idle worker would hold the text.
def _setup_child_flags(module):
    flags = module._args_from_interpreter_flags

    def _args_from_interpreter_flags():
        return [a for a in flags() if a != "-S"]

    module._args_from_interpreter_flags = _args_from_interpreter_flags


class _AfterImport:
    """A finder, first on sys.meta_path, that runs a function once a module
    has been imported, by the session's code or by the runtime: logging,
    linecache and cloudpickle are set up in the sessions that import them
    without being imported into every worker."""

    def __init__(self, hooks):
        self.hooks = {}
        self.finding = set()  # names being looked up: finders may re-enter
        for name, hook in hooks.items():
            if name in sys.modules:
                self._run(hook, sys.modules[name])
            else:
                self.hooks[name] = hook

    @staticmethod
    def _run(hook, module):
        try:
            hook(module)
        except Exception as exc:
            _log(LOG_WARN, "setting up %s failed: %r" % (module.__name__, exc))

    def find_spec(self, name, path=None, target=None):
        if name not in self.hooks or name in self.finding:
            return None
        self.finding.add(name)
        try:
            spec = _find_spec(name, path, target, skip=self)
        finally:
            self.finding.discard(name)
        if spec is None:
            return None
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None or isinstance(loader, type):
            return spec  # a loader of many modules (builtin, frozen): left

        def exec_module(module):
            try:
                run(module)
            finally:
                loader.__dict__.pop("exec_module", None)  # a reload: no hook
            # The hook goes once the module has run: not when the module
            # was only looked for (importlib.util.find_spec), nor when its
            # first import failed.
            hook = self.hooks.pop(name, None)
            if hook is not None:
                self._run(hook, module)
        loader.exec_module = exec_module
        return spec


def _report(what, exc):
    """Show the session's user an exception nobody else will see."""
    try:
        sys.stderr.write("remotemedia: %s:\n%s" % (what, _format_traceback(exc)))
        sys.stderr.flush()
    except Exception:
        pass


# Errors --------------------------------------------------------------------


def _type_name(t):
    """The exception type's name as a traceback prints it."""
    aio = sys.modules.get("asyncio")
    if aio is not None and t is getattr(aio, "CancelledError", None):
        return "asyncio.CancelledError"
    module = getattr(t, "__module__", None)
    qualname = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    if not isinstance(module, str) or module in ("builtins", "__main__"):
        return str(qualname)
    return "%s.%s" % (module, qualname)


def _safe_str(exc):
    try:
        return str(exc)
    except BaseException:
        return "<unprintable %s object>" % type(exc).__name__


def _strip_runtime(te):
    """Drop this module's frames from a TracebackException and its chain
    (a loop, not recursion: a chain may be thousands long)."""
    import traceback
    seen = set()
    todo = [te]
    while todo:
        te = todo.pop()
        while te is not None and id(te) not in seen:
            seen.add(id(te))
            te.stack = traceback.StackSummary.from_list(
                [f for f in te.stack if f.filename != _RUNTIME_FILE])
            if te.__cause__ is not None:
                todo.append(te.__cause__)
            te = te.__context__


def _format_traceback(exc):
    """The remote traceback text, without the runtime's own frames."""
    try:
        import traceback
        te = traceback.TracebackException.from_exception(exc)
        _strip_runtime(te)
        return "".join(te.format())
    except BaseException:
        return "%s: %s\n" % (_type_name(type(exc)), _safe_str(exc))


def _full_traceback(exc):
    """The traceback text with the runtime's frames, for the worker's log."""
    try:
        import traceback
        return "".join(traceback.format_exception(exc))
    except BaseException:
        return "%s: %s" % (_type_name(type(exc)), _safe_str(exc))


def _clean(text):
    """Make text safe for a protobuf string: valid UTF-8, no NUL."""
    text = str(text).replace("\0", "\\0")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_fields(exc, pickles):
    """type, module, qualname, message, traceback and pickled (if the
    session pickles) of exc."""
    t = type(exc)
    pickled = b""
    if pickles:
        try:
            pickled = _dumps(exc)
        except BaseException:
            pickled = b""
    return (_clean(_type_name(t)),
            _clean(getattr(t, "__module__", "") or ""),
            _clean(getattr(t, "__qualname__", t.__name__)),
            _clean(_safe_str(exc)),
            _clean(_format_traceback(exc)),
            pickled)


# The attribute map ------------------------------------------------------------


# Code flags (CPython's CO_*, as the inspect module names them).
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200

# A class's own namespace, and its MRO, read past any metaclass.
_class_dict = type.__dict__["__dict__"].__get__
_class_mro = type.__dict__["__mro__"].__get__
_MISSING = object()

# inspect.markcoroutinefunction (3.12) marks a function as a coroutine one.
_MARKS_COROUTINES = sys.version_info >= (3, 12)
# What makes a class attribute win over the instance's in getattr_static:
# __get__ and __set__; from 3.12 on, __get__ and __set__ or __delete__.
_OVER_INSTANCE = ("__set__", "__delete__") if sys.version_info >= (3, 12) \
    else ("__set__",)


def _code_flags(value):
    """co_flags of the function behind value (a method, a partial, a
    compiled function with __code__), or 0; with CO_COROUTINE for a
    function that inspect.markcoroutinefunction marked (Python 3.12)."""
    while isinstance(value, types.MethodType):
        value = value.__func__
    while isinstance(value, functools.partial):
        value = value.func
    if not callable(value):
        return 0
    if _MARKS_COROUTINES and \
            getattr(value, "_is_coroutine_marker", None) is not None:
        import inspect
        if inspect.iscoroutinefunction(value):
            return _CO_COROUTINE
    if isinstance(value, types.FunctionType):
        return value.__code__.co_flags
    if isinstance(value, type):
        return 0
    # What passes for a function (Cython's, say): the attributes of one.
    code = getattr(value, "__code__", None)
    defaults = getattr(value, "__defaults__", _MISSING)
    kwdefaults = getattr(value, "__kwdefaults__", _MISSING)
    annotations = getattr(value, "__annotations__", None)
    if (isinstance(code, types.CodeType)
            and isinstance(getattr(value, "__name__", None), str)
            and (defaults is None or isinstance(defaults, tuple))
            and (kwdefaults is None or isinstance(kwdefaults, dict))
            and (annotations is None or isinstance(annotations, dict))):
        return code.co_flags
    return 0


def _defines(cls, name):
    """Whether a class on cls's MRO has name in its own namespace."""
    return any(name in _class_dict(c) for c in _class_mro(cls))


def _is_data_descriptor(value):
    """inspect.isdatadescriptor (hasattr on the type, as it does: a
    metaclass's attributes count)."""
    if isinstance(value, (type, types.MethodType, types.FunctionType)):
        return False
    return hasattr(type(value), "__set__") or \
        hasattr(type(value), "__delete__")


def _attr_kind(value):
    """The AttrKind of a value found as inspect.getattr_static finds it."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, (property, functools.cached_property)):
        return ATTR_PROPERTY
    if isinstance(value, types.MemberDescriptorType):
        return ATTR_ATTRIBUTE  # a __slots__ entry
    if _is_data_descriptor(value):
        return ATTR_PROPERTY
    flags = _code_flags(value)
    if flags & _CO_ASYNC_GENERATOR:
        return ATTR_ASYNC_GENERATOR
    if flags & _CO_COROUTINE:
        return ATTR_ASYNC_METHOD
    if flags & _CO_GENERATOR:
        return ATTR_GENERATOR
    if callable(value):
        return ATTR_METHOD
    return ATTR_ATTRIBUTE


def _own_dict_slot(cls):
    """Whether every class on cls's MRO that names __dict__ has the one that
    type gives it: then obj.__dict__ is the instance's namespace."""
    for c in _class_mro(cls):
        d = _class_dict(c).get("__dict__", _MISSING)
        if d is not _MISSING and not (
                type(d) is types.GetSetDescriptorType
                and d.__objclass__ is c and d.__name__ == "__dict__"):
            return False
    return True


def _static_getter(obj):
    """A function of a name that finds what obj's attribute of that name is
    without running code of obj's (no getter, no __getattr__): what the
    class's namespaces and the instance's hold, a data descriptor of the
    class first. For an instance of a class whose classes and metaclasses
    keep __dict__ as type made it; otherwise inspect.getattr_static, which
    costs the worker 640 KiB to import."""
    cls = type(obj)
    if issubclass(cls, type) or not (_own_dict_slot(cls)
                                     and _own_dict_slot(type(cls))):
        return _inspect_getter(obj)
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        own = {}  # __slots__ without __dict__
    namespaces = [_class_dict(c) for c in _class_mro(cls)]

    def get(name):
        found = next((ns[name] for ns in namespaces if name in ns), _MISSING)
        mine = dict.get(own, name, _MISSING)
        if mine is not _MISSING and found is not _MISSING and \
                _defines(type(found), "__get__") and \
                any(_defines(type(found), n) for n in _OVER_INSTANCE):
            return found  # a data descriptor wins over the instance
        if mine is not _MISSING:
            return mine
        if found is not _MISSING:
            return found
        raise AttributeError(name)
    return get


def _inspect_getter(obj):
    import inspect
    return functools.partial(inspect.getattr_static, obj)


def attribute_map(obj):
    """Public name -> AttrKind, without running any property getter."""
    try:
        names = dir(obj)
    except Exception as exc:
        _log(LOG_WARN, "dir() of the object failed: %r" % (exc,))
        names = []
    kinds = {}
    try:
        get = _static_getter(obj)
    except Exception as exc:
        _log(LOG_WARN, "the attribute map falls back to inspect: %r" % (exc,))
        get = _inspect_getter(obj)
    for name in names:
        if not isinstance(name, str) or name.startswith("_"):
            continue
        try:
            value = get(name)
        except AttributeError:
            continue  # resolved dynamically: the client forwards it anyway
        try:
            kinds[name] = _attr_kind(value)
        except Exception:
            kinds[name] = ATTR_ATTRIBUTE
    return _fit_attribute_map(kinds)


# Ready must fit one frame. The client forwards names missing from the map
# anyway, so a huge map is cut, plain attributes first, then by name length.
_MAP_BUDGET = 512 * 1024


def _fit_attribute_map(kinds):
    size = sum(len(n.encode("utf-8", "replace")) + 8 for n in kinds)
    if size <= _MAP_BUDGET:
        return kinds
    order = sorted(kinds, key=lambda n: (kinds[n] == ATTR_ATTRIBUTE, len(n), n))
    kept, size = {}, 0
    for name in order:
        size += len(name.encode("utf-8", "replace")) + 8
        if size > _MAP_BUDGET:
            break
        kept[name] = kinds[name]
    _log(LOG_WARN, "attribute map cut from %d to %d names to fit Ready"
         % (len(kinds), len(kept)))
    return kept


# Opening ------------------------------------------------------------------------


def _major_minor(version):
    parts = version.strip().split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _version_problem(py_ver, cp_ver, server_cp):
    """Why a pickle from this client cannot load here, or None."""
    client = _major_minor(py_ver) if py_ver else None
    if client is not None and client != sys.version_info[:2]:
        c = "%d.%d" % client
        return ("Python version mismatch: client %s, server %s: cloudpickle "
                "can only load an object pickled by the same Python "
                "major.minor version; run the client with Python %s, or use "
                "a server that runs Python %s" % (c, SERVER_PYTHON,
                                                  SERVER_PYTHON, c))
    client_major = cp_ver.split(".")[0] if cp_ver else ""
    server_major = server_cp.split(".")[0]
    if client_major and client_major != server_major:
        return ("cloudpickle version mismatch: client %s, server %s: the "
                "major versions must match; install cloudpickle %s.x on the "
                "client (pip install 'cloudpickle>=%s,<%d')"
                % (cp_ver, server_cp, server_major, server_major,
                   int(server_major) + 1))
    return None


def _load_problem(exc):
    """An actionable message for an object that cannot be loaded."""
    msg = "cannot load the object: %s: %s" % (_type_name(type(exc)),
                                               _safe_str(exc))
    if isinstance(exc, ModuleNotFoundError):
        msg += (" (the module is not on the server: add its package to "
                "pip_packages, or, for your own module, call "
                "cloudpickle.register_pickle_by_value(module) on the client)")
    elif isinstance(exc, (AttributeError, ImportError)):
        msg += (" (the server's version of a module differs from the "
                "client's: pin the same version in pip_packages)")
    return msg


def _from_source(source, class_name, init_args_json):
    """Run Python source in a fresh module and instantiate class_name."""
    module = types.ModuleType(SOURCE_MODULE)
    module.__file__ = SOURCE_FILE
    sys.modules[SOURCE_MODULE] = module
    _sources[SOURCE_FILE] = (len(source), None, source.splitlines(True),
                             SOURCE_FILE)
    if "linecache" in sys.modules:
        _setup_linecache(sys.modules["linecache"])
    exec(_rmworker.compile(source, SOURCE_FILE), module.__dict__)
    cls = module.__dict__.get(class_name)
    if cls is None:
        raise NameError("the source defines no %r" % (class_name,))
    doc = _json_loads(init_args_json, "init_args_json") if init_args_json \
        else {}
    args, kwargs = _split_json_args(doc, "init_args_json")
    return cls(*args, **kwargs)


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def _finite_float(text):
    value = float(text)
    if value - value != 0.0:  # inf (NaN never parses from a number)
        raise ValueError("%s is out of the range of a float" % text)
    return value


class _JsonContext:
    """The options of json.loads that _json's scanner reads: strict JSON."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_int = int
    parse_float = _finite_float
    parse_constant = _no_constant


_json_scan = _json.make_scanner(_JsonContext)
_JSON_SPACE = " \t\n\r"


def _json_unserializable(value):
    raise TypeError("not JSON")  # _json_dumps asks json why


def _json_dumps(value):
    """json.dumps(value, allow_nan=False). _json (json's C half) does it
    when it can; json, which imports re, only when it cannot, to say why
    or to do what _json does not."""
    try:
        return "".join(_json.make_encoder(
            {}, _json_unserializable, _json.encode_basestring_ascii, None,
            ": ", ", ", False, False, False)(value, 0))
    except Exception:
        pass
    import json
    return json.dumps(value, allow_nan=False)


def _json_loads(data, what):
    """Strict JSON (no NaN or Infinity: other languages read these
    documents too); TypeError names what it was. _json reads UTF-8 text;
    json whatever that fails on (other encodings, or errors to explain)."""
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
        start = len(text) - len(text.lstrip(_JSON_SPACE))
        value, end = _json_scan(text, start)
        if not text[end:].strip(_JSON_SPACE):
            return value
    except Exception:
        pass
    import json
    try:
        return json.loads(data, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise TypeError("invalid JSON in %s: %s"
                        % (what, _safe_str(exc) or type(exc).__name__)) \
            from None


def _split_json_args(doc, what):
    """{"args": [...], "kwargs": {...}} -> (list, dict)."""
    if not isinstance(doc, dict):
        raise TypeError('%s must be a JSON object {"args": [...], '
                        '"kwargs": {...}}' % what)
    other = sorted(k for k in doc if k not in ("args", "kwargs"))
    if other:
        # A misspelt key ("arg") would otherwise call with no arguments.
        raise TypeError('%s: unknown key %r: only "args" and "kwargs" are '
                        'allowed' % (what, other[0]))
    args = doc.get("args", [])
    kwargs = doc.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TypeError('%s: "args" must be a list and "kwargs" an object'
                        % what)
    return args, kwargs


def _installed(sys_path):
    """name==version of the distributions on the session's extra paths.

    Read from the *.dist-info directory names (NAME-VERSION.dist-info, as
    wheels install them), which costs a directory listing instead of the
    import of importlib.metadata.
    """
    found = set()
    for entry in sys_path or ():
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            dist, sep, version = name[:-len(".dist-info")].partition("-")
            if sep and dist and version:
                found.add("%s==%s" % (dist.replace("_", "-"), version))
    return sorted(found)


# Calls --------------------------------------------------------------------------


class _Call:
    """One call, from its Call message to its one terminal answer."""

    __slots__ = ("id", "name", "timeout", "deadline", "task", "gen",
                 "is_async", "credit", "index", "advancing", "in_user",
                 "timed_out", "cancelling", "done")

    def __init__(self, call_id, name):
        self.id = call_id
        self.name = name
        self.timeout = 0.0      # seconds, of the deadline in force
        self.deadline = None    # time.monotonic() value, or None
        self.task = None        # the task running its code, if any
        self.gen = None         # the generator it returned, if any
        self.is_async = False   # gen is an async generator
        self.credit = 0         # items the client may still receive
        self.index = 0          # index of the next item
        self.advancing = False  # a step or a task is producing items
        self.in_user = False    # user code of this call runs right now
        self.timed_out = False
        self.cancelling = False
        self.done = False       # the terminal answer has been sent


def _hide_host_packages(keep):
    """An environment built without the host's site-packages: take them off
    sys.path (the runtime's own imports are done), keeping the session's."""
    import site
    # _setup_site put every host directory there is on sys.path (the user
    # site is off), and made sys.path absolute: so are the session's
    # entries compared.
    keep = {site.makepath(p)[1] for p in keep or ()}
    sys.path[:] = [p for p in sys.path if site.makepath(p)[1] in keep or not (
        p in _host_paths or p.endswith(("site-packages", "dist-packages")))]
    import importlib
    importlib.invalidate_caches()


class Runtime:
    """The session: the object, its calls, and the loop they run on."""

    def __init__(self):
        self.info = _rmworker.init_info()
        self.spin = (self.info.get("busy_poll_us") or 0) / 1e6
        self.loop = _PlainLoop(_plain_selector(self.spin))
        self.fd = _rmworker.fileno()
        self.max_value = self.info.get("max_value_bytes") or 0
        self.obj = None
        self.fmt = FORMAT_PICKLE
        self.opened = False
        self.calls = {}         # call id -> _Call, until answered
        self.tasks = {}         # task -> the _Call whose code it runs
        self.current = None     # the _Call whose sync code runs now
        self.armed = None       # the deadline the timer is set for
        self.why = None         # why the session ends, once it does
        self.stopping = None    # a future of why, once on asyncio
        self.pending = None     # events handed back to the loop, in order

    # The loop ------------------------------------------------------------------

    def serve(self):
        """Serve the session until Close, EOF or a Fatal; then clean up."""
        _signal.signal(_signal.SIGALRM, self._on_alarm)
        plain = self.loop
        plain.add_reader(self.fd, self._on_readable)
        self._on_readable()  # frames may already be waiting
        if self.why is None and self.loop is plain:
            plain.run()  # until the session ends or moves to asyncio
        if self.loop is not plain:
            for callback, args in plain.close():
                self.loop.call_soon(callback, *args)
            self.loop.run_until_complete(self._serve_async())
            return
        _log(LOG_DEBUG, "session ends: %s" % self.why)
        for st in self._drop_calls():
            if st.gen is not None:
                self._close_gen(st)  # a sync one: async ones need asyncio
        _flush_stdio()
        plain.close()

    async def _serve_async(self):
        try:
            why = await self.stopping
        finally:
            self.loop.remove_reader(self.fd)
        _log(LOG_DEBUG, "session ends: %s" % why)
        await self._shutdown()

    def _use_asyncio(self):
        """Run the session on an asyncio loop from now on (see the module's
        docstring). The plain loop stops after the callback that runs now;
        serve() moves what it had still to run."""
        global asyncio
        if self.stopping is not None:
            return
        import asyncio
        loop = asyncio.SelectorEventLoop(_asyncio_selector(self.spin))
        asyncio.set_event_loop(loop)
        self.loop.stop()
        self.loop = loop
        self.stopping = loop.create_future()
        if self.why is not None:
            self.stopping.set_result(self.why)
        loop.add_reader(self.fd, self._on_readable)

    def _stop(self, why):
        if self.why is not None:
            return
        self.why = why
        if self.stopping is not None:
            self.stopping.set_result(why)
        else:
            self.loop.stop()

    def _on_readable(self):
        events = _pump()
        if self.pending is not None:
            self.pending.extend(events)  # after what was read before
            return
        self._run_events(events)

    def _later(self, events):
        """Run events in a later turn of the loop, before anything read
        from fd 3 meanwhile (which _on_readable queues behind them)."""
        self.pending = events
        self.loop.call_soon(self._run_pending)

    def _run_pending(self):
        events, self.pending = self.pending, None
        self._run_events(events)

    def _run_events(self, events):
        loop = self.loop
        doomed = None
        if len(events) > 1:
            doomed = _ended_before_start(events)
            since = time.monotonic()
        for i, ev in enumerate(events):
            if self.why is not None:
                return
            if i and ev[0] == "call" and time.monotonic() - since > _REREAD:
                # The calls before ran a while: a Cancel, or the front's
                # word that a deadline passed, may have come meanwhile. The
                # rest waits its turn behind the loop's other callbacks, as
                # a new batch: one read a turn, as ever.
                self._later(events[i:] + _pump())
                return
            if doomed and ev[0] == "call" and ev[1] in doomed:
                self._never_started(ev, doomed[ev[1]])
                continue
            if ev[0] == "open" and _names_asyncio(ev):
                self._open_on_asyncio()
                if self.why is not None:
                    return
            if self.loop is not loop:
                # User code runs where the session's loop is running.
                self._later(events[i:])
                return
            self._dispatch(ev)
            if ev[0] == "open" and "asyncio" in sys.modules:
                self._open_on_asyncio()  # the object's packages imported it

    def _expired(self, call_id):
        """The front's clock, which started when the call arrived, says
        its deadline (or its Pull's) passed: the worker's, which started
        later, gives way (an async call awaiting is timed out now)."""
        st = self.calls.get(call_id)
        if st is None or st.done or st.deadline is None:
            return
        now = time.monotonic()
        if st.deadline > now:
            st.deadline = now
            self._rearm()

    def _never_started(self, ev, why):
        """A call whose Cancel, or word that its deadline passed, came with
        it (queued while user code ran): it never starts. Answered as C
        answers those that come while the arguments do."""
        call_id, name, timeout_ms = ev[1], ev[2], ev[5]
        st = _Call(call_id, name)
        self.calls[call_id] = st
        if not self._finish(st):
            return
        if why == "cancel":
            fields = ("asyncio.CancelledError", "asyncio.exceptions",
                      "CancelledError",
                      "cancelled by the client before it started")
        else:
            fields = ("TimeoutError", "builtins", "TimeoutError",
                      "call to %r exceeded its deadline%s before it could "
                      "start (other calls held the session)"
                      % (name, " of %gs" % (timeout_ms / 1000.0)
                         if timeout_ms else ""))
        self._send(_rmworker.send_error, call_id, *fields, "", b"",
                   why == "expired")

    def _open_on_asyncio(self):
        try:
            self._use_asyncio()
        except BaseException as exc:
            self._fatal(INTERNAL, "the worker could not start its asyncio "
                        "loop: %s" % _safe_str(exc))

    def _dispatch(self, ev):
        """Run one event; a failure here never stops the loop."""
        kind = ev[0]
        try:
            if kind == "call":
                self._call(*ev[1:])
            elif kind == "pull":
                self._pull(*ev[1:])
            elif kind == "cancel":
                self._cancel(ev[1])
            elif kind == "open":
                self._open(*ev[1:])
            elif kind in ("close", "eof"):
                self._stop(kind)
            elif kind == "expired":
                self._expired(ev[1])
            else:
                _log(LOG_WARN, "unknown event %r" % (kind,))
        except BaseException as exc:
            _log(LOG_WARN, "runtime error on %s: %s"
                 % (kind, _full_traceback(exc)))
            if kind == "call" and ev[1] in self.calls:
                self._fail(self.calls[ev[1]], exc)
            elif kind == "open" and not self.opened:
                self._fatal(INTERNAL, "the worker failed to open the "
                            "session: %s" % _safe_str(exc))

    def _send(self, fn, *args):
        _flush_stdio()
        fn(*args)
        if _rmworker.gone():
            # fd 3 no longer reaches the front (user code closed it, say):
            # nothing more can be said, and nothing heard, since the loop
            # watches fd 3 only. End now rather than at the next deadline.
            self._stop("the front cannot be written to")

    def _fatal(self, code, message):
        self._send(_rmworker.send_fatal, code, _clean(message))
        self._stop("fatal")

    # Open ------------------------------------------------------------------------

    def _open(self, fmt, obj, py_ver, cp_ver, source, class_name, init_args,
              sizes=()):
        if fmt not in (FORMAT_PICKLE, FORMAT_JSON):
            return self._fatal(INVALID_ARGUMENT,
                               "unknown serialization format %d" % fmt)
        if not obj and not source:
            return self._fatal(INVALID_ARGUMENT, "Open carries neither an "
                               "object nor source and class_name")
        global _cp_light, _cp_version
        try:
            if self.info.get("isolate_site"):
                _cloudpickle()  # from the host's packages, before they go
                _hide_host_packages(self.info["sys_path"])
            if (_run_env_pth(self.info["sys_path"]) and
                    "cloudpickle" not in sys.modules):
                _cp_version = None  # a directory a .pth named may hold one
            server_cp = _cloudpickle_version()
        except ImportError as exc:
            return self._fatal(FAILED_PRECONDITION, "cloudpickle is not "
                               "installed on the server: %s" % exc)
        _cp_light = server_cp.split(".")[0] == "2"
        self.fmt = fmt
        problem = _version_problem(py_ver, cp_ver, server_cp)
        if obj and problem:
            return self._fatal(FAILED_PRECONDITION, problem)
        try:
            if obj:
                value = _loads(obj, sizes)
            else:
                value = _from_source(source, class_name, init_args)
        except BaseException as exc:
            # Its type and traceback first (call id 0), then the status.
            self._send(_rmworker.send_error, 0, *_error_fields(exc, False), False)
            return self._fatal(FAILED_PRECONDITION, _load_problem(exc))
        self.obj = value
        self.opened = True
        self._send(_rmworker.send_ready, self.info["session_id"],
                   attribute_map(value), SERVER_PYTHON, server_cp,
                   _installed(self.info["sys_path"]))

    # Calls -----------------------------------------------------------------------

    def _call(self, call_id, name, kind, args, timeout_ms, sizes=()):
        st = _Call(call_id, name)
        self.calls[call_id] = st
        if not self.opened:
            return self._fail(st, RuntimeError("the session is not open"))
        self._set_deadline(st, timeout_ms)
        try:
            if kind == CALL_METHOD:
                a, kw = self._decode_args(name, args, sizes)
            elif kind != CALL_GET:
                raise ValueError("unknown call kind %d" % kind)
            # User code runs only here (inlined _run_user: this is the
            # path of every call).
            self.current = st
            st.in_user = True
            try:
                value = getattr(self.obj, name)
                if kind == CALL_METHOD:
                    value = value(*a, **kw)
            finally:
                st.in_user = False
                self.current = None
        except BaseException as exc:
            return self._fail(st, exc)
        if id(type(value)) in _PLAIN:
            self._reply(st, value)
        else:
            self._handle_value(st, value)

    def _run_user(self, st, fn, *args, **kwargs):
        """Run user code of st, where the deadline alarm may strike."""
        self.current = st
        st.in_user = True
        try:
            return fn(*args, **kwargs)
        finally:
            st.in_user = False
            self.current = None

    def _decode_args(self, name, data, sizes=()):
        """The call's (args, kwargs), from its pickle (and its out-of-band
        buffers, of these sizes) or JSON document."""
        if not data:
            return (), {}
        if self.fmt == FORMAT_JSON:
            doc = _json_loads(data, "the arguments of %r" % name)
            return _split_json_args(doc, "the arguments of %r" % name)
        doc = _loads(data, sizes)
        if (not isinstance(doc, (tuple, list)) or len(doc) != 2
                or not isinstance(doc[1], dict)):
            raise TypeError("the arguments of %r must be a pickled "
                            "(args, kwargs) pair" % name)
        return tuple(doc[0]), doc[1]

    def _encode(self, value, what):
        """The wire form of a result or an item, within the size limit:
        (document, out-of-band buffers)."""
        buffers = []
        if self.fmt == FORMAT_JSON:
            try:
                data = _json_dumps(value).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                raise TypeError("%s is not JSON serializable: %s"
                                % (what, exc)) from None
        else:
            try:
                data = _dumps(value, buffers)
            except Exception as exc:
                raise TypeError("%s cannot be pickled: %s: %s"
                                % (what, type(exc).__name__, exc)) from exc
        size = len(data) + sum(b.nbytes for b in buffers)
        if self.max_value and size > self.max_value:
            raise ValueError("%s is %d bytes, over the server's limit of %d "
                             "bytes per value (max_value_bytes)"
                             % (what, size, self.max_value))
        return data, buffers

    def _handle_value(self, st, value):
        """Answer with what the call returned: a value, a task, a stream."""
        if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)):
            st.gen = value
            st.is_async = isinstance(value, types.AsyncGeneratorType)
            if st.is_async:
                self._use_asyncio()
            st.deadline = None
            self._rearm()
            self._send(_rmworker.send_result, st.id, None, True)
        elif isinstance(value, collections.abc.Awaitable):
            self._use_asyncio()
            self._start_task(st, self._await_call(st, value))
        else:
            self._reply(st, value)

    def _start_task(self, st, coro):
        if not self.loop.is_running():
            # The session moves to asyncio in this turn: the task starts
            # after the rest of the turn's events, as on a running loop
            # (a Cancel among them finds it not started).
            self.loop.call_soon(self._start_task, st, coro)
            return
        task = self.loop.create_task(coro)
        st.task = task
        self.tasks[task] = st
        task.add_done_callback(self._task_done)

    def _task_done(self, task):
        """Clean up after a call's task; answer if it never got to run."""
        st = self.tasks.pop(task, None)
        if st is None:
            return
        if st.task is task:
            st.task = None
            st.advancing = False
        if st.done:
            return
        if task.cancelled():
            if not st.cancelling or st.gen is None:
                self._fail_cancelled(st, asyncio.CancelledError())
        elif task.exception() is not None:
            self._fail(st, task.exception())

    async def _await_call(self, st, awaitable):
        st.in_user = True
        try:
            try:
                value = await awaitable
            finally:
                st.in_user = False
        except asyncio.CancelledError as exc:
            return self._fail_cancelled(st, exc)
        except BaseException as exc:
            return self._fail(st, exc)
        st.task = None
        self._handle_value(st, value)

    def _reply(self, st, value):
        try:
            data, buffers = self._encode(value, "result of %r" % st.name)
        except BaseException as exc:
            return self._fail(st, exc)
        if self._finish(st):
            self._send(_rmworker.send_result, st.id, data, False, buffers)

    def _finish(self, st):
        """Mark st answered; False if it already was."""
        if st.done:
            return False
        st.done = True
        self.calls.pop(st.id, None)
        if st.deadline is not None:
            st.deadline = None
            self._rearm()
        return True

    def _fail(self, st, exc):
        """Answer st with an Error for exc (closing its generator)."""
        if not self._finish(st):
            return
        timeout = st.timed_out and isinstance(exc, TimeoutError)
        if st.gen is not None:
            self._close_gen(st)
        fields = _error_fields(exc, self.fmt == FORMAT_PICKLE)
        self._send(_rmworker.send_error, st.id, *fields, timeout)

    def _fail_cancelled(self, st, exc):
        """A task of st was cancelled: by its deadline, or by the client."""
        if st.timed_out:
            err = TimeoutError(self._deadline_message(st))
            return self._fail(st, err.with_traceback(exc.__traceback__))
        if st.cancelling and not exc.args:
            exc.args = ("cancelled by the client",)
        self._fail(st, exc)

    def _end(self, st, cancelled):
        if self._finish(st):
            self._send(_rmworker.send_end, st.id, cancelled)

    # Generators ------------------------------------------------------------------

    def _pull(self, call_id, n, timeout_ms):
        st = self.calls.get(call_id)
        if st is None or st.gen is None or st.cancelling or n <= 0:
            return  # finished, or not a generator: the Pull raced its end
        st.credit += n
        self._set_deadline(st, timeout_ms)
        self._advance(st)

    def _advance(self, st):
        if st.advancing or st.done or st.credit <= 0:
            return
        st.advancing = True
        if st.is_async:
            self._start_task(st, self._advance_async(st))
        else:
            self.loop.call_soon(self._step_sync, st)

    def _idle(self, st):
        """The credit is used up: the generator waits, with no deadline."""
        st.advancing = False
        if st.deadline is not None:
            st.deadline = None
            self._rearm()

    def _item(self, st, item):
        """Send one item; False if it could not be encoded (st failed)."""
        try:
            data, buffers = self._encode(
                item, "item %d of %r" % (st.index, st.name))
        except BaseException as exc:
            self._fail(st, exc)
            return False
        index = st.index
        st.index += 1
        st.credit -= 1
        self._send(_rmworker.send_item, st.id, index, data, buffers)
        return True

    def _step_sync(self, st):
        """Advance a sync generator by one item, on the loop thread."""
        if st.done or st.cancelling:
            st.advancing = False
            return
        try:
            item = self._run_user(st, next, st.gen)
        except StopIteration:
            return self._end(st, False)
        except BaseException as exc:
            return self._fail(st, exc)
        if not self._item(st, item):
            return
        if st.credit > 0:
            self.loop.call_soon(self._step_sync, st)
        else:
            self._idle(st)

    async def _advance_async(self, st):
        """Advance an async generator while it has credit, one at a time."""
        while st.credit > 0 and not st.done and not st.cancelling:
            st.in_user = True
            try:
                try:
                    item = await st.gen.__anext__()
                finally:
                    st.in_user = False
            except StopAsyncIteration:
                return self._end(st, False)
            except asyncio.CancelledError as exc:
                if not st.cancelling:
                    self._fail_cancelled(st, exc)
                return
            except BaseException as exc:
                return self._fail(st, exc)
            if st.cancelling or not self._item(st, item):
                return
        self._idle(st)

    def _close_gen(self, st):
        """Close st's generator so that its finally runs; never raises."""
        if st.is_async:
            task = st.task
            if task is None or task.done() or task is _current_task():
                self.loop.create_task(self._aclose(st.gen, st.name))
            return
        try:
            st.gen.close()
        except BaseException as exc:
            _report("closing generator %r raised" % st.name, exc)

    async def _aclose(self, agen, name):
        try:
            await agen.aclose()
        except BaseException as exc:
            _report("closing async generator %r raised" % name, exc)

    def _cancel(self, call_id):
        st = self.calls.get(call_id)
        if st is None or st.cancelling:
            return  # finished already: the Cancel raced its end
        st.cancelling = True
        if st.gen is not None and st.is_async:
            self.loop.create_task(self._cancel_async_gen(st))
        elif st.gen is not None:
            self._close_gen(st)
            self._end(st, True)
        elif st.task is not None:
            st.task.cancel()

    async def _cancel_async_gen(self, st):
        task = st.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        await self._aclose(st.gen, st.name)
        self._end(st, True)

    # Deadlines -------------------------------------------------------------------

    def _deadline_message(self, st):
        return "call to %r exceeded its deadline of %gs" % (st.name, st.timeout)

    def _set_deadline(self, st, timeout_ms):
        if not timeout_ms:
            return
        st.timeout = timeout_ms / 1000.0
        st.deadline = time.monotonic() + st.timeout
        self._rearm()

    def _rearm(self):
        """Set the timer for the earliest deadline of all running calls.

        It is stopped, not left to strike early, when no call needs it: a
        stray SIGALRM would interrupt a system call of user code that has
        no deadline (EINTR), and C code does not always retry."""
        soonest = None
        for st in list(self.calls.values()):
            if st.deadline is not None and (soonest is None
                                            or st.deadline < soonest):
                soonest = st.deadline
        if soonest == self.armed:
            return
        self.armed = soonest
        if soonest is None:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        else:
            delay = max(soonest - time.monotonic(), 0.0005)
            _signal.setitimer(_signal.ITIMER_REAL, delay)

    def _on_alarm(self, signum, frame):
        """SIGALRM: raise TimeoutError into a late call that is running;
        cancel the late calls that are not."""
        self.armed = None
        now = time.monotonic() + ALARM_SLACK
        running = self.current
        if running is None:
            running = self.tasks.get(_current_task())
        hit = None
        for st in list(self.calls.values()):
            if st.deadline is None or st.deadline > now:
                continue
            st.deadline = None
            st.timed_out = True
            if st is running and st.in_user:
                hit = st
            else:
                self.loop.call_soon_threadsafe(self._expire, st)
        self._rearm()
        if hit is not None:
            raise TimeoutError(self._deadline_message(hit))

    def _expire(self, st):
        """A late call that was not running when its deadline passed."""
        if st.done:
            return
        if st.task is not None and not st.task.done():
            st.task.cancel()  # its handler turns this into a TimeoutError
            return
        self._fail(st, TimeoutError(self._deadline_message(st)))

    # The end ---------------------------------------------------------------------

    def _drop_calls(self):
        """Close or EOF: stop the timer; the calls that were running, each
        marked answered (the client is gone)."""
        self.armed = None
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        pending = list(self.calls.values())
        for st in pending:
            st.done = True
            st.deadline = None
        self.calls.clear()
        return pending

    async def _shutdown(self):
        """Close or EOF on asyncio: cancel tasks, close generators, flush
        output."""
        pending = self._drop_calls()
        me = _current_task()
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
        for st in pending:
            if st.gen is None:
                continue
            if not st.is_async:
                self._close_gen(st)
                continue
            try:
                await asyncio.wait_for(st.gen.aclose(), SHUTDOWN_WAIT)
            except BaseException as exc:
                _report("closing async generator %r raised" % st.name, exc)
        _flush_stdio()


def _pump():
    """The events that fd 3 holds now; a failed read ends the session."""
    try:
        return _rmworker.pump()
    except Exception as exc:
        _log(LOG_WARN, "pump failed: %r" % (exc,))
        return [("eof",)]


def _ended_before_start(events):
    """{call id: "cancel" or "expired"} for the calls of events that a
    Cancel, or the front's word that their deadline passed, later in
    events ends before they start."""
    calls, doomed = set(), {}
    for ev in events:
        if ev[0] == "call":
            calls.add(ev[1])
        elif ev[0] in ("cancel", "expired") and ev[1] in calls:
            doomed.setdefault(ev[1], ev[0])
    return doomed


def _names_asyncio(ev):
    """Whether an open event's pickle (not its out-of-band buffers) or source
    holds the word asyncio: cloudpickle writes the name of every module that
    the object's code uses."""
    obj, source, sizes = ev[2], ev[5], ev[8]
    end = max(0, len(obj or b"") - sum(sizes or ()))
    if obj and obj.find(b"asyncio", 0, end) >= 0:
        return True
    return bool(source and "asyncio" in source)


def _current_task():
    if asyncio is None:
        return None  # no task runs before the session moves to asyncio
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _run_exit_hooks():
    """What the interpreter would run at exit; the worker skips finalize."""
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException as exc:
        _log(LOG_WARN, "atexit hooks failed: %r" % (exc,))
    try:
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
    except BaseException:
        pass
    _flush_stdio()


def _forget_front():
    """In a child forked by user code: let go of the front's socket."""
    try:
        os.close(_rmworker.fileno())
    except OSError:
        pass


# What clients' classes hold, small: what compiling it leaves stays in an
# idle spare's memory (a class twice this size cost 32 KiB a session more,
# and opens no faster).
_REHEARSAL_SOURCE = """
class Rehearsal:
    limit = 1

    def __init__(self, x=1, *a, k="", **kw):
        self.x = x

    @property
    def p(self):
        try:
            return f"{self.x}", [i for i in range(self.x)]
        except (ValueError, KeyError) as e:
            raise RuntimeError(e) from None

    def ping(self, x):
        return x

    def g(self):
        yield self

    async def c(self):
        return self
"""


def _preload():
    """Rehearse an Open and a call, on an object of a class made from source
    as an Open of source makes it, so that a spare worker (one started
    before its session, front_pool.c) has run their code paths once when
    the Open comes: the first real ones would otherwise pay a millisecond
    or two. Nothing is sent.
    """
    global _cp_version
    try:
        _cp_version = _cloudpickle_version()
        # The Open's checks: the first int() of a str took 0.1 ms.
        _version_problem(SERVER_PYTHON, _cp_version, _cp_version)
        _rehearse_loading()
    except ImportError:
        pass  # the Open says so (FAILED_PRECONDITION)
    except Exception as exc:
        _log(LOG_DEBUG, "rehearsal failed: %r" % (exc,))
    try:
        module = types.ModuleType("_remotemedia_rehearsal")
        exec(_rmworker.compile(_REHEARSAL_SOURCE, "<rehearsal>"),
             module.__dict__)
        obj = module.Rehearsal()
        attribute_map(obj)
        args, kwargs = _loads(_dumps(((1,), {}), []))
        _dumps(getattr(obj, "ping")(*args, **kwargs), [])
    except Exception as exc:
        _log(LOG_DEBUG, "rehearsal failed: %r" % (exc,))


# What waking from a sleep adds to the wait for I/O (_Busy): tens of
# microseconds on a virtual machine.
_WAKE = 50e-6


# A selector's select() that, after I/O, polls for spin seconds before it
# sleeps (--session-busy-poll): in a ping-pong of calls the next one is taken
# without waking a halted vCPU, which costs tens of microseconds on a
# virtual machine.
#
# It polls only while polling pays. A poll that the next I/O missed ends
# it; a sleep that ended in I/O within spin and _WAKE starts it again, as a
# poll would have caught that I/O. The default, 400 us, covers the Python
# client, whose next call comes 200-300 us after an answer: its worker then
# polls through each of those pauses. A client that takes longer between
# calls finds a worker that sleeps at once and leaves it the CPU; a loop
# woken only by its timers does not poll either. (Comments, not a
# docstring: every idle worker would hold one.)
class _Busy:
    def __init__(self, spin):
        super().__init__()
        self._spin = spin
        self._busy = False

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0:
            return super().select(0)  # callbacks ready: says nothing
        start = time.perf_counter()
        if self._busy:
            end = start + (self._spin if timeout is None
                           else min(self._spin, timeout))
            while True:
                ready = super().select(0)
                if ready:
                    return ready
                now = time.perf_counter()
                if now >= end:
                    break
                # The client or the front, woken on this CPU, runs now
                # rather than after the poll.
                os.sched_yield()
            if timeout is not None and timeout <= self._spin:
                return []  # a timer is due: no I/O was missed
            self._busy = False
            if timeout is not None:
                timeout = max(0.0, timeout - (now - start))
            return super().select(timeout)
        ready = super().select(timeout)
        self._busy = (bool(ready)
                      and time.perf_counter() - start <= self._spin + _WAKE)
        return ready


class _Epoll:
    """What _PlainLoop needs of selectors.EpollSelector: descriptors to read,
    each with its data. The selectors module, and what it imports, held
    90 KiB of every idle session."""

    def __init__(self):
        self._epoll = select.epoll()
        self._data = {}

    def register(self, fd, data=None):
        self._epoll.register(fd, select.EPOLLIN)
        self._data[fd] = data

    def select(self, timeout=None):
        """(fd, data) pairs of the descriptors ready to read."""
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            # Whole milliseconds up, as selectors waits: epoll_wait's unit.
            timeout = -(-timeout * 1e3 // 1) / 1e3
        else:
            timeout = 0
        data = self._data
        return [(fd, data[fd]) for fd, _ in
                self._epoll.poll(timeout, max(len(data), 1))]

    def close(self):
        self._epoll.close()


class _BusyEpoll(_Busy, _Epoll):
    pass


def _plain_selector(spin):
    return _BusyEpoll(spin) if spin else _Epoll()


def _asyncio_selector(spin):
    """The selector of the session's asyncio loop, made once a session."""
    import selectors
    if not spin:
        return selectors.DefaultSelector()

    class _BusySelector(_Busy, selectors.EpollSelector):
        pass

    return _BusySelector(spin)


class _PlainLoop:
    """The session's loop while it needs no asyncio: callbacks to run soon,
    one per readable file descriptor, and a wake-up pipe for the callbacks
    that the SIGALRM handler adds while the loop sleeps. Its turns are an
    asyncio loop's: the callbacks queued before it looks for I/O run first,
    then those of the I/O, then the turn ends."""

    def __init__(self, selector):
        self._selector = selector
        self._ready = collections.deque()
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        selector.register(self._wake_r)

    def add_reader(self, fd, callback):
        self._selector.register(fd, callback)

    def call_soon(self, callback, *args):
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback, *args):
        self._ready.append((callback, args))
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop will wake

    def _drain(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass  # empty

    def stop(self):
        """Return from run() once the callback running now returns."""
        self._stopped = True

    def run(self):
        ready = self._ready
        while not self._stopped:
            for fd, callback in self._selector.select(0 if ready else None):
                if fd == self._wake_r:
                    self._drain()  # now: its descriptor dies with the loop
                else:
                    ready.append((callback, ()))
            for _ in range(len(ready)):
                if self._stopped:
                    break
                callback, args = ready.popleft()
                try:
                    callback(*args)
                except Exception as exc:
                    _log(LOG_WARN, "a callback of the loop failed: %s"
                         % _full_traceback(exc))

    def close(self):
        """Free the loop; the callbacks it had still to run."""
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        leftover, self._ready = list(self._ready), collections.deque()
        return leftover


def main():
    """Serve the session; return the worker's exit status."""
    _setup_stdio()
    sys.meta_path.insert(0, _AfterImport({
        "logging": _setup_logging,
        "linecache": _setup_linecache,
        "cloudpickle.cloudpickle": _cp_imported,
        "subprocess": _setup_child_flags,
    }))
    _setup_site()
    _preload()
    os.register_at_fork(after_in_child=_forget_front)
    runtime = Runtime()
    _rmworker.trim()  # before a spare waits: what start-up left
    try:
        runtime.serve()
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
    _run_exit_hooks()
    return 0
