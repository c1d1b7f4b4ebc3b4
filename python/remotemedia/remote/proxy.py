"""The proxy objects users hold: RemoteProxy, pending calls, remote generators.

:class:`RemoteProxy` has no public names of its own: every public attribute
is looked up in the attribute map that ``Ready`` carried and forwarded.

- A method, async method, generator or async generator gives a callable.
- A property or plain attribute gives an awaitable that sends
  ``Call{kind: CALL_GET}``; it is also callable, for attributes that hold a
  callable.
- A name missing from the map gives the same awaitable-and-callable object,
  so that the server's ``AttributeError`` comes back.

Calling gives a :class:`PendingCall`. Nothing is sent until it is awaited
or iterated; it is both:

- ``await proxy.m(1, b=2)`` sends ``Call`` and returns the decoded
  ``Result``; when the result is a generator it returns a
  :class:`RemoteGenerator`;
- ``async for x in proxy.gen(3)`` sends ``Call`` and streams the items.

A PendingCall is also a ``collections.abc.Coroutine``, so
``asyncio.create_task(proxy.m())`` and ``asyncio.gather`` accept it.

A proxy that is garbage-collected ends its session, as a file closes when
it is collected: once nothing made from it (a method, a pending call, a
generator) is left either, its session is closed in the background, or
its stream cancelled if its event loop is gone. ``close_proxy`` ends it at
once.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Dict, Generator, Optional, Tuple

from remotemedia.remote import wire
from remotemedia.remote.session import CallState, Session
from remotemedia.remote.wire import pb

__all__ = ["PendingCall", "RemoteGenerator", "RemoteProxy"]

class _Lease:
    """Held by a proxy and by everything made from it: the last one gone,
    the session is closed (see the module docstring)."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def __del__(self) -> None:
        try:
            self.session.close_soon()
        except Exception:
            pass


# PendingCall._rm_coro once ``async for`` took the call over.
_ITERATED: Any = object()

_CALLABLE_KINDS = frozenset({pb.ATTR_METHOD, pb.ATTR_ASYNC_METHOD,
                             pb.ATTR_GENERATOR, pb.ATTR_ASYNC_GENERATOR})


class RemoteGenerator(AsyncIterator[Any]):
    """An async iterator over a remote generator's items.

    Items flow on credit: the first ``__anext__`` sends ``Pull`` for a
    window of items (``Limits.prefetch_items``, default 4), so the remote
    generator runs at most one window ahead. The credit is topped up to the
    window when half of it has been consumed, or when no item is buffered and
    the consumer is about to wait: each ``Pull`` restarts the server's
    deadline, so the server bounds the same wait the client does. Items are yielded in order; iteration
    stops at ``End``; an ``Error`` raises the remote exception at that item.
    Each wait for an item is bounded by the config's ``timeout``: on expiry
    the generator is cancelled and :class:`RemoteTimeoutError` raised.

    ``aclose()``, leaving an ``async for`` early, or garbage collection sends
    ``Cancel``; the server closes the generator, so its ``finally`` runs.
    """

    __slots__ = ("_rm_session", "_rm_lease", "_rm_state", "_rm_name", "_rm_start",
                 "_rm_granted", "_rm_consumed", "_rm_done", "_rm_running",
                 "__weakref__")

    def __init__(self, lease: _Lease, state: Optional[CallState], name: str,
                 start: Optional[Tuple[int, Optional[bytes]]] = None) -> None:
        self._rm_session = lease.session
        self._rm_lease = lease
        self._rm_state = state
        self._rm_name = name
        self._rm_start = start
        self._rm_granted = 0
        self._rm_consumed = 0
        self._rm_done = False
        self._rm_running = False

    def __aiter__(self) -> RemoteGenerator:
        return self

    async def __anext__(self) -> Any:
        """Return the next item; sends ``Pull`` credit as needed.

        Like an async generator's, it runs one at a time: a second
        ``__anext__`` while one waits raises RuntimeError.
        """
        self._rm_session.check_loop()
        if self._rm_running:
            raise RuntimeError(
                f"anext(): remote generator {self._rm_name}() is already running")
        self._rm_running = True
        try:
            return await self._rm_next()
        finally:
            self._rm_running = False

    async def _rm_next(self) -> Any:
        if self._rm_done:
            raise StopAsyncIteration
        if self._rm_state is None:
            await self._rm_begin()
        state = self._rm_state
        assert state is not None
        self._rm_top_up(state)
        try:
            event = await self._rm_session.next_event(state, f"generator {self._rm_name}()")
        except Exception:
            self._rm_done = True
            raise
        if event[0] == "end":
            self._rm_done = True
            raise StopAsyncIteration
        self._rm_consumed += 1
        return self._rm_session.decode(event[1], f"an item of {self._rm_name}()")

    async def _rm_begin(self) -> None:
        """Send the call (``async for`` directly over a pending call)."""
        assert self._rm_start is not None
        kind, doc = self._rm_start
        self._rm_start = None
        try:
            is_generator, value = await self._rm_session.call(self._rm_name, kind, doc)
        except BaseException:
            self._rm_done = True
            raise
        if not is_generator:
            self._rm_done = True
            raise TypeError(
                f"{self._rm_name}() returned {type(value).__name__}, not a generator: "
                "await it instead of iterating it")
        self._rm_state = value

    def _rm_top_up(self, state: CallState) -> None:
        """Grant credit so that a window of items is requested or buffered."""
        window = self._rm_session.prefetch
        outstanding = self._rm_granted - self._rm_consumed
        if outstanding <= window // 2 or (not state.events and outstanding < window):
            n = window - outstanding
            self._rm_session.pull(state, n)
            self._rm_granted += n

    async def aclose(self) -> None:
        """Stop the remote generator: send ``Cancel`` and wait for its ``End``.

        The wait is bounded by the config's ``timeout``; errors are ignored.
        """
        self._rm_session.check_loop()
        if self._rm_done:
            return
        self._rm_done = True
        state = self._rm_state
        if state is not None and self._rm_session.cancel(state):
            await self._rm_session.drain(state)

    def __del__(self) -> None:
        try:
            if not self._rm_done and self._rm_state is not None:
                self._rm_done = True
                self._rm_session.cancel_threadsafe(self._rm_state)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "done" if self._rm_done else "open"
        return f"<RemoteGenerator {self._rm_name}() {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("a RemoteGenerator cannot be pickled")


class PendingCall(Coroutine[Any, Any, Any]):
    """A remote call not yet sent: await it, or iterate it with ``async for``.

    Awaiting sends ``Call`` and waits (at most the config's ``timeout``) for
    its ``Result`` or ``Error``; if the awaiting task is cancelled or the
    timeout passes, ``Cancel`` abandons the call on the server. The call is
    sent at most once and never re-sent.
    """

    __slots__ = ("_rm_session", "_rm_lease", "_rm_name", "_rm_kind", "_rm_doc", "_rm_coro",
                 "_rm_used")

    def __init__(self, lease: _Lease, name: str, kind: int, doc: Optional[bytes]) -> None:
        self._rm_session = lease.session
        self._rm_lease = lease
        self._rm_name = name
        self._rm_kind = kind
        self._rm_doc = doc
        self._rm_coro: Optional[Coroutine[Any, Any, Any]] = None
        self._rm_used = False

    def _rm_coroutine(self) -> Coroutine[Any, Any, Any]:
        if self._rm_coro is _ITERATED:
            raise RuntimeError(f"the call {self._rm_name}() is already being iterated")
        if self._rm_coro is None:
            self._rm_used = True
            self._rm_coro = self._rm_run()
        return self._rm_coro

    async def _rm_run(self) -> Any:
        session = self._rm_session
        is_generator, value = await session.call(self._rm_name, self._rm_kind, self._rm_doc)
        self._rm_doc = None
        if is_generator:
            return RemoteGenerator(self._rm_lease, value, self._rm_name)
        return value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._rm_coroutine().__await__()

    def send(self, value: Any) -> Any:
        return self._rm_coroutine().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._rm_coroutine().throw(typ)
        return self._rm_coroutine().throw(typ, val, tb)

    def close(self) -> None:
        self._rm_used = True
        if self._rm_coro is not None and self._rm_coro is not _ITERATED:
            self._rm_coro.close()

    def __aiter__(self) -> RemoteGenerator:
        """Send the call on the first ``__anext__`` and stream its items."""
        if self._rm_coro is not None:
            raise RuntimeError(f"the call {self._rm_name}() was already awaited or iterated")
        self._rm_used = True
        self._rm_coro = _ITERATED
        doc, self._rm_doc = self._rm_doc, None
        return RemoteGenerator(self._rm_lease, None, self._rm_name,
                               start=(self._rm_kind, doc))

    def __del__(self) -> None:
        try:
            if not self._rm_used:
                warnings.warn(f"remote call {self._rm_name}() was never awaited",
                              RuntimeWarning, stacklevel=2)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<PendingCall {self._rm_name}()>"

    def __reduce__(self) -> Any:
        raise TypeError(f"the remote call {self._rm_name}() cannot be pickled: await it "
                        "and pass its result")


def _method_call(lease: _Lease, name: str, args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> PendingCall:
    """``name(*args, **kwargs)`` as a pending ``CALL_METHOD``, its arguments encoded now."""
    doc = wire.encode_args(lease.session.fmt, args, kwargs)
    return PendingCall(lease, name, pb.CALL_METHOD, doc)


class _RemoteAttribute(PendingCall):
    """``proxy.name`` for a property, a plain attribute or an unknown name.

    Awaiting it reads the attribute (``CALL_GET``); calling it calls it
    (``CALL_METHOD``).
    """

    __slots__ = ()

    def __init__(self, lease: _Lease, name: str) -> None:
        super().__init__(lease, name, pb.CALL_GET, None)
        self._rm_used = True  # reading without awaiting is not a mistake

    def __call__(self, /, *args: Any, **kwargs: Any) -> PendingCall:
        return _method_call(self._rm_lease, self._rm_name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote attribute {self._rm_name}>"

    def __reduce__(self) -> Any:
        raise TypeError(f"the remote attribute {self._rm_name} cannot be pickled: await it "
                        "and pass its value")


class _RemoteMethod:
    """``proxy.name`` for a method or generator: call it to get a PendingCall."""

    __slots__ = ("_rm_lease", "_rm_name")

    def __init__(self, lease: _Lease, name: str) -> None:
        self._rm_lease = lease
        self._rm_name = name

    def __call__(self, /, *args: Any, **kwargs: Any) -> PendingCall:
        """Encode the arguments now (errors raise here) and return the pending call."""
        return _method_call(self._rm_lease, self._rm_name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._rm_name}>"

    def __reduce__(self) -> Any:
        raise TypeError(f"the remote method {self._rm_name} cannot be pickled; it is bound "
                        "to its session")


class RemoteProxy:
    """A stand-in for an object that lives in a remote session.

    Every public attribute is forwarded (see the module docstring), and so is
    a call of the proxy itself (``await proxy(x)``); other dunder
    names are answered locally and never reach the wire. Attributes cannot be
    set or deleted through the proxy: call a method of the object instead.
    Created by :meth:`RemoteProxyClient.create_proxy`; ended by
    :meth:`RemoteProxyClient.close_proxy`.
    """

    __slots__ = ("_rm_session", "_rm_lease", "_rm_attrs", "_rm_type")

    def __init__(self, session: Session, attributes: Dict[str, int], type_name: str) -> None:
        object.__setattr__(self, "_rm_session", session)
        object.__setattr__(self, "_rm_lease", _Lease(session))
        object.__setattr__(self, "_rm_attrs", dict(attributes))
        object.__setattr__(self, "_rm_type", type_name)

    def __call__(self, /, *args: Any, **kwargs: Any) -> PendingCall:
        """``await proxy(x)`` calls the remote object itself (its
        ``__call__``); one that is not callable answers AttributeError."""
        return _method_call(self._rm_lease, "__call__", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_rm_") or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        lease = self._rm_lease
        if self._rm_attrs.get(name) in _CALLABLE_KINDS:
            return _RemoteMethod(lease, name)
        return _RemoteAttribute(lease, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set {name!r} on a remote object through its proxy; call a method instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name!r} on a remote object through its proxy")

    def __repr__(self) -> str:
        session = self._rm_session
        state = " closed" if session.closed else ""
        return f"<RemoteProxy {self._rm_type} session={session.short_id}{state}>"

    def __reduce__(self) -> Any:
        raise TypeError("a RemoteProxy cannot be pickled; it is bound to its session")
