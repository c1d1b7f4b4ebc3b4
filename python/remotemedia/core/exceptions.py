"""Exceptions raised by the remotemedia client.

Hierarchy::

    RemoteMediaError
    └── RemoteExecutionError          .remote_type .remote_traceback .code
        ├── InstallError              FAILED_PRECONDITION: an install failed
        ├── AuthenticationError       UNAUTHENTICATED / PERMISSION_DENIED
        ├── RemoteTimeoutError        a deadline passed (also a TimeoutError)
        ├── WorkerDiedError           ABORTED: the session's worker died
        ├── ConnectionLostError       the server could not be reached, or the
        │                             connection dropped (also a ConnectionError)
        └── SessionClosedError        the session was closed (by the client, or OK from the server)

An exception raised by user code on the server arrives as a
``RemoteExecutionError`` whose ``.code`` is None. When its original type is a
builtin or is already imported on the client, the exception is also an
instance of that type (see :mod:`remotemedia.remote.errors`), so
``except ValueError`` works, and it keeps the original's attributes,
``code`` among them when the original has one (``HTTPError.code``).

This module imports neither gRPC nor protobuf; ``.code`` holds a
``grpc.StatusCode`` when the error comes from a gRPC status.
"""

from __future__ import annotations

from typing import Any, Optional

# The one list of the exception names: remotemedia.core and remotemedia.remote
# re-export what it names (``remotemedia`` maps each name to this module).
__all__ = [
    "RemoteMediaError",
    "RemoteExecutionError",
    "InstallError",
    "AuthenticationError",
    "RemoteTimeoutError",
    "WorkerDiedError",
    "ConnectionLostError",
    "SessionClosedError",
]


class RemoteMediaError(Exception):
    """Base class of every error raised by the remotemedia client."""


class RemoteExecutionError(RemoteMediaError):
    """A remote call, or the session it runs in, failed.

    Attributes:
        remote_type: the remote exception's type as traceback prints it
            (``"ValueError"``, ``"mymod.MyError"``), or None when the failure
            is not an exception raised on the server.
        remote_traceback: the remote traceback text, or None.
        code: the ``grpc.StatusCode`` that ended the session, or None for an
            exception raised by user code (the original's own ``code``
            when it has one).

    ``str(exc)`` is the remote message (``str()`` of the remote exception, or
    the server's status message).
    """

    remote_type: Optional[str]
    remote_traceback: Optional[str]
    code: Any

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: Optional[str] = None,
        remote_traceback: Optional[str] = None,
        code: Any = None,
    ) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.code = code

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), str(self), self.remote_type,
                           self.remote_traceback, self.code))


def _rebuild(cls: type, message: str, remote_type: Optional[str],
             remote_traceback: Optional[str], code: Any) -> RemoteExecutionError:
    """Unpickle a RemoteExecutionError subclass (keyword-only attributes)."""
    exc = cls(message, remote_type=remote_type, remote_traceback=remote_traceback,
              code=code)
    assert isinstance(exc, RemoteExecutionError)
    return exc


class InstallError(RemoteExecutionError):
    """Installing the session's ``pip_packages`` failed (FAILED_PRECONDITION).

    The message names the package and carries the tail of pip's output.
    """


class AuthenticationError(RemoteExecutionError):
    """The server refused the credentials (UNAUTHENTICATED or PERMISSION_DENIED)."""


class RemoteTimeoutError(RemoteExecutionError, TimeoutError):
    """A call, a ``Pull`` or the session open passed its deadline.

    Raised when the server answers with an ``Error`` whose ``timeout`` flag is
    set, when the session ends with DEADLINE_EXCEEDED, or when the client's
    own timer expires (the call is then cancelled on the server). It is also
    a builtin ``TimeoutError``.
    """


class WorkerDiedError(RemoteExecutionError):
    """The session's worker process died (status ABORTED).

    The message says how, e.g. "worker killed by signal 9 (Killed)". Every
    pending and later call of that session raises it.
    """


class ConnectionLostError(RemoteExecutionError, ConnectionError):
    """The server could not be reached, or the connection to it was lost.

    Raised by ``create_proxy`` when all attempts failed, and by every pending
    and later call of a session whose connection dropped. The client never
    re-creates a session by itself. It is also a builtin ``ConnectionError``.
    """


class SessionClosedError(RemoteExecutionError):
    """The session is closed: by ``close_proxy``, by leaving the client, or
    by the server ending its stream with OK (a session the server ends for
    another reason raises the class of that status: WorkerDiedError when an
    admin ends it, ConnectionLostError when the server shuts down, ...)."""
