"""Turning the server's ``Error`` messages and gRPC statuses into exceptions.

A user exception travels as ``Error{type, module, qualname, message,
traceback, pickled, timeout}``. The client raises a
:class:`~remotemedia.core.exceptions.RemoteExecutionError`; when the original
class can be found without importing anything (the module is ``builtins`` or
already in ``sys.modules``), the exception is an instance of a dynamic
subclass of both that class and ``RemoteExecutionError``, so ``except
ValueError`` (or ``except MyError`` for a class of the client's
``__main__``) works. The client looks the class up without importing a
module because the server named it, and never runs the original class's
``__init__``. The pickled original's state is loaded as a result is: the
server is trusted with what the client unpickles (results are pickles);
only the names it looks up must be loaded already.

A session that ends with a gRPC status becomes one of the
``RemoteExecutionError`` subclasses, chosen by :func:`exception_from_status`.
"""

from __future__ import annotations

import builtins
import io
import logging
import pickle
import sys
import threading
from typing import Any, Dict, Optional

import grpc

from remotemedia.core.exceptions import *  # the status table and the builders use each
from remotemedia.remote.wire import pb

__all__ = ["exception_from_error", "exception_from_status", "resolve_exception_class"]

log = logging.getLogger("remotemedia.remote")

# Original exception class -> its dynamic subclass that is also a
# RemoteExecutionError. Classes that cannot be combined map to None.
_COMBINED: Dict[type, Optional[type]] = {}
_COMBINED_LOCK = threading.Lock()

# Attributes that the pickled exception must not overwrite. ``code`` is not
# one: an exception of the user's with a code of its own (HTTPError's)
# keeps it, where RemoteExecutionError's would be None.
_RESERVED = frozenset({"remote_type", "remote_traceback", "_rm_message", "__notes__"})

# Never combined: raising these from a coroutine or an async iterator would
# change control flow (StopIteration becomes RuntimeError, StopAsyncIteration
# ends an ``async for``).
_NOT_COMBINED = (StopIteration, StopAsyncIteration)


def _static_lookup(obj: Any, name: str) -> Any:
    """``getattr`` without running code: no module ``__getattr__``, no descriptors.

    Returns None when the name is not there.
    """
    if isinstance(obj, type):
        for klass in obj.__mro__:
            if name in vars(klass):
                return vars(klass)[name]
        return None
    namespace = getattr(obj, "__dict__", None)
    if not isinstance(namespace, dict):
        return None
    return namespace.get(name)


def _lookup_qualname(module_name: str, qualname: str) -> Any:
    """Find ``module.qualname`` among modules already imported, else None."""
    if not module_name or not qualname:
        return None
    obj: Any = builtins if module_name == "builtins" else sys.modules.get(module_name)
    if obj is None:
        return None
    for part in qualname.split("."):
        if not part or part == "<locals>":
            return None
        obj = _static_lookup(obj, part)
        if obj is None:
            return None
    return obj


def resolve_exception_class(module_name: str, qualname: str) -> Optional[type]:
    """The local exception class ``module.qualname``, if it is already loaded.

    Only ``builtins`` and modules already in ``sys.modules`` are searched;
    nothing is imported. Only subclasses of ``Exception`` qualify (not
    ``KeyboardInterrupt``, ``asyncio.CancelledError`` and the like), and not
    ``StopIteration``/``StopAsyncIteration``.
    """
    obj = _lookup_qualname(module_name, qualname)
    if not isinstance(obj, type) or not issubclass(obj, Exception):
        return None
    if issubclass(obj, _NOT_COMBINED):
        return None
    return obj


def _remote_str(self: BaseException) -> str:
    """``str()`` of a combined exception: the remote message."""
    message = self.__dict__.get("_rm_message")
    if message is None:
        return BaseException.__str__(self)
    return str(message)


def _remote_reduce(self: BaseException) -> Any:
    """Pickle a combined exception as a rebuild from its original class."""
    base = type(self).__dict__.get("_rm_base") or RemoteExecutionError
    return (_rebuild_combined, (base, str(self), getattr(self, "remote_type", None),
                                getattr(self, "remote_traceback", None)))


def _rebuild_combined(base: type, message: str, remote_type: Optional[str],
                      remote_traceback: Optional[str]) -> RemoteExecutionError:
    """Unpickle a combined exception (see :func:`_remote_reduce`)."""
    exc = _instantiate(base, message, remote_type, remote_traceback)
    if exc is None:
        exc = RemoteExecutionError(message, remote_type=remote_type,
                                   remote_traceback=remote_traceback)
    return exc


def _combined_class(base: type) -> Optional[type]:
    """The cached dynamic subclass of ``base`` and RemoteExecutionError.

    None when Python refuses the combination (layout conflicts, final
    classes, metaclass conflicts).
    """
    with _COMBINED_LOCK:
        if base in _COMBINED:
            return _COMBINED[base]
        namespace = {
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
            "__str__": _remote_str,
            "__reduce__": _remote_reduce,
            "_rm_base": base,
        }
        try:
            cls: Optional[type] = type(base.__name__, (base, RemoteExecutionError), namespace)
        except (KeyboardInterrupt, MemoryError, RecursionError):
            raise  # not the class's answer: not to be cached
        except BaseException:  # a refusal, or the class's own hooks failing
            log.debug("cannot combine %s with RemoteExecutionError", base, exc_info=True)
            cls = None
        _COMBINED[base] = cls
        return cls


def _instantiate(base: type, message: str, remote_type: Optional[str],
                 remote_traceback: Optional[str]) -> Optional[RemoteExecutionError]:
    """Make an instance of the combined class without calling ``base.__init__``."""
    cls = _combined_class(base)
    if cls is None:
        return None
    try:
        exc = base.__new__(cls)  # type: ignore[call-overload]
        exc.args = (message,)
        exc._rm_message = message
        exc.remote_type = remote_type
        exc.remote_traceback = remote_traceback
        if _static_lookup(base, "code") is None:
            exc.code = None  # not a status; a class's own code stays visible
    except KeyboardInterrupt:
        raise
    except BaseException:  # a hostile or unusual __new__/__setattr__
        log.debug("cannot build %s for a remote exception", base, exc_info=True)
        return None
    return exc if isinstance(exc, RemoteExecutionError) else None


class _NoImportUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """An Unpickler that resolves globals only from modules already imported,
    and makes exceptions without running their ``__init__``.

    An exception pickles as its class called with its ``args``; a class
    whose ``__init__`` takes other arguments (``__init__(self, status,
    body)`` passing a message to ``super().__init__``) could not be loaded
    so, and its attributes were lost. Its ``__new__`` takes any arguments
    and sets ``args``; the attributes follow as state. (The Python
    Unpickler, whose opcodes can be overridden: exceptions are small.)
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        obj = _lookup_qualname(module, name)
        if obj is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not loaded on the client")
        return obj

    def _load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if isinstance(func, type) and issubclass(func, BaseException):
            stack[-1] = func.__new__(func, *args)
        else:
            stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = _load_reduce


def _restore_pickled(exc: BaseException, base: type, pickled: bytes) -> None:
    """Copy arguments and attributes from the pickled original into ``exc``.

    Best effort: any failure leaves ``exc`` as it is.
    """
    try:
        original = _NoImportUnpickler(io.BytesIO(pickled)).load()
    except KeyboardInterrupt:
        raise
    except BaseException:  # what it runs may raise anything, SystemExit too
        log.debug("cannot unpickle the remote exception", exc_info=True)
        return
    if not isinstance(original, BaseException):
        return
    try:
        same_type = type(original) is base
        if same_type:
            exc.args = original.args
        if isinstance(original, OSError) and isinstance(exc, OSError):
            for attr in ("errno", "strerror", "filename", "filename2"):
                setattr(exc, attr, getattr(original, attr))
        for key, value in vars(original).items():
            if key not in _RESERVED:
                setattr(exc, key, value)
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.debug("cannot restore the remote exception's state", exc_info=True)


def _add_traceback_note(exc: BaseException, remote_traceback: Optional[str]) -> None:
    """Attach the remote traceback as a note, so that it prints with ``exc``."""
    if remote_traceback and hasattr(exc, "add_note"):
        exc.add_note("Remote traceback:\n" + remote_traceback.rstrip("\n"))


def _type_name(err: Any) -> str:
    if err.type:
        return str(err.type)
    if err.module in ("", "builtins"):
        return str(err.qualname) or "Exception"
    return f"{err.module}.{err.qualname}"


def exception_from_error(err: Any, fmt: int) -> RemoteExecutionError:
    """Build the exception to raise for a server ``Error`` message.

    - ``timeout`` set: :class:`RemoteTimeoutError`.
    - the original class is loaded locally: an instance of a dynamic
      subclass of it and of :class:`RemoteExecutionError`, made with
      ``T.__new__``, ``args == (message,)``; with the pickle format the
      pickled original's arguments and attributes are copied in when they
      can be unpickled from modules already loaded.
    - otherwise a plain :class:`RemoteExecutionError`.

    ``str(exc)`` is the remote message, ``exc.remote_type`` the type name,
    ``exc.remote_traceback`` the remote traceback (also added as a note),
    ``exc.code`` None, unless the original had a ``code`` of its own.

    It never raises (but KeyboardInterrupt): whatever the code of the
    original's class or of its pickle does, the fallback is the plain
    :class:`RemoteExecutionError`.
    """
    message = str(err.message)
    remote_type = _type_name(err)
    remote_tb = str(err.traceback) or None
    exc: Optional[RemoteExecutionError] = None
    if not err.timeout:
        try:
            exc = _as_original(err, fmt, message, remote_type, remote_tb)
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.debug("cannot rebuild the remote %s", remote_type, exc_info=True)
            exc = None
    if exc is None:
        cls = RemoteTimeoutError if err.timeout else RemoteExecutionError
        exc = cls(message, remote_type=remote_type, remote_traceback=remote_tb)
        _add_traceback_note(exc, remote_tb)
    return exc


def _as_original(err: Any, fmt: int, message: str, remote_type: str,
                 remote_tb: Optional[str]) -> Optional[RemoteExecutionError]:
    """An instance of the original's class combined with
    RemoteExecutionError, its note added; None if there is none."""
    base = resolve_exception_class(err.module, err.qualname)
    if base is None:
        return None
    exc = _instantiate(base, message, remote_type, remote_tb)
    if exc is not None:
        if fmt == pb.FORMAT_PICKLE and err.pickled:
            _restore_pickled(exc, base, bytes(err.pickled))
        _add_traceback_note(exc, remote_tb)
    return exc


def _looks_like_install_failure(details: str) -> bool:
    """The server's message for an environment it could not build begins
    so (front_env.c); nothing else does, whatever else a message says of
    installing (an object that fails to load may say anything)."""
    return details.startswith("Failed to install ")


_STATUS_CLASSES = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RemoteTimeoutError,
    grpc.StatusCode.ABORTED: WorkerDiedError,
    grpc.StatusCode.UNAVAILABLE: ConnectionLostError,
    grpc.StatusCode.CANCELLED: ConnectionLostError,
}


def exception_from_status(code: grpc.StatusCode, details: str, target: str,
                          session_error: Optional[Any] = None) -> RemoteMediaError:
    """Build the exception for a session stream that ended with ``code``.

    FAILED_PRECONDITION is :class:`InstallError` when the message says an
    install failed; UNAUTHENTICATED/PERMISSION_DENIED
    :class:`AuthenticationError`; DEADLINE_EXCEEDED
    :class:`RemoteTimeoutError`; ABORTED :class:`WorkerDiedError`;
    UNAVAILABLE/CANCELLED (connection lost) :class:`ConnectionLostError`; OK
    before the client closed :class:`SessionClosedError`; anything else
    :class:`RemoteExecutionError`. ``str(exc)`` is the server's message.
    A session-level ``Error`` (call id 0) that came before supplies
    ``remote_type`` and ``remote_traceback``.
    """
    details = details or ""
    cls: type = _STATUS_CLASSES.get(code, RemoteExecutionError)
    if code == grpc.StatusCode.FAILED_PRECONDITION and _looks_like_install_failure(details):
        cls = InstallError
    if code == grpc.StatusCode.OK:
        cls = SessionClosedError
        details = details or "the server ended the session"
    if cls is ConnectionLostError:
        details = f"connection to {target} lost: {details or code.name}"
    if not details:
        details = f"session ended with status {code.name}"
    remote_type = remote_tb = None
    if session_error is not None:
        remote_type = _type_name(session_error)
        remote_tb = str(session_error.traceback) or None
    exc: RemoteMediaError = cls(details, remote_type=remote_type, remote_traceback=remote_tb,
                                code=code)
    _add_traceback_note(exc, remote_tb)
    return exc
