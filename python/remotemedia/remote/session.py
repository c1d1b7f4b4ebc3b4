"""One session: one ``RemoteExecution/Session`` stream, one remote worker.

A :class:`Session` owns the gRPC stream-stream call, a writer and a
reader task:

- the **writer** takes batches of ``ClientMessage``s from a FIFO queue and
  writes them with ``call.write()``, one at a time. A batch (a call and its
  argument chunks) is written back to back, so writes never interleave. The
  writer is not a task: the first step of each write runs at once, in
  whatever queued it, and the completion of what gRPC waits for runs the
  rest (see :meth:`Session._advance`). So a call's message is on the wire
  before its caller waits, a loop turn earlier than a task could send it,
  and no user-side cancellation ever lands inside a gRPC write (which would
  cancel the whole stream): the caller never awaits the write.
- the **reader** reads ``ServerMessage``s with ``call.read()`` and
  dispatches them by call id to per-call :class:`CallState`s: an event
  deque and a waiter future. It reassembles chunked values, logs
  ``Output``, and, when the stream ends, fails every pending call with the
  exception the status maps to.

Calls get ids 1, 2, ... allocated synchronously together with the enqueue
of their messages, so ids reach the wire strictly increasing. A call is
never re-sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from typing import Any, Callable, Coroutine, Deque, Dict, Iterable, List, Optional, Set, Tuple

import grpc

from remotemedia.core.exceptions import (
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    SessionClosedError,
)
from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import wire
from remotemedia.remote.errors import exception_from_error, exception_from_status
from remotemedia.remote.wire import pb

__all__ = ["CallState", "Session", "StreamEnd"]

log = logging.getLogger("remotemedia.remote")

#: gRPC method of the session stream.
SESSION_METHOD = "/remotemedia.v1.RemoteExecution/Session"

# Queue sentinel: half-close the stream after what was queued before it.
_HALF_CLOSE = object()

# Session phases.
_OPENING, _READY, _ENDED = "opening", "ready", "ended"

Event = Tuple[Any, ...]


def log_remote(level: int, message: str, *args: Any) -> None:
    """Log what the remote side printed or reported, on ``remotemedia.remote``.

    When the application has configured no logging at all (no handler on
    the logger or any ancestor), Python would drop INFO records, so the line
    is written to stderr instead: remote ``print()`` output stays visible.
    """
    if log.hasHandlers():
        log.log(level, message, *args)
    else:
        sys.stderr.write((message % args) + "\n")


def local_grace(timeout: float) -> float:
    """Extra time the client waits past ``timeout`` before its own timer fires.

    The server enforces the same deadline (``timeout_ms``) and answers with an
    ``Error`` that carries the remote traceback; the grace (10 %, at most
    1 s) lets that answer arrive first.
    """
    return min(1.0, 0.1 * timeout)


class StreamEnd:
    """How the session stream ended: a gRPC status code and its message."""

    __slots__ = ("code", "details")

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"StreamEnd({self.code.name}, {self.details!r})"


class CallState:
    """What the reader has delivered for one call id, and who waits for it.

    Events, in order: ``("result", bytes)``, ``("generator",)``,
    ``("item", bytes)``, ``("end", cancelled)``, ``("error", exception)``.
    """

    __slots__ = ("call_id", "name", "events", "waiter", "generator", "cancelled",
                 "deadline")

    def __init__(self, call_id: int, name: str) -> None:
        self.call_id = call_id
        self.name = name
        self.events: Deque[Event] = collections.deque()
        self.waiter: Optional[asyncio.Future[None]] = None
        self.generator = False
        self.cancelled = False
        self.deadline = 0.0  # of the wait under way, on the loop's clock

    def push(self, event: Event) -> bool:
        """Queue an event and wake the waiter; whether one was woken."""
        self.events.append(event)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return True
        return False

    async def next_event(self, timeout: Optional[float],
                         watch: Optional[Callable[[CallState], bool]] = None,
                         loop: Optional[asyncio.AbstractEventLoop] = None
                         ) -> Optional[Event]:
        """The next event, or None if none came within ``timeout`` seconds.

        ``watch``, if given, is asked to wake the wait at ``self.deadline``
        (the session's one timer, :meth:`Session._watch`); without it, or
        when it declines, the wait sets a timer of its own. ``loop`` is the
        running loop, where the caller knows it: Python 3.11's
        ``asyncio.get_running_loop()`` makes a system call (``getpid``).
        Cancelling the waiting task loses no event.
        """
        if not self.events:
            if loop is None:
                loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self.waiter = waiter
            timer = None
            if timeout is not None:
                self.deadline = loop.time() + timeout
                if watch is None or not watch(self):
                    timer = loop.call_at(self.deadline, _wake, waiter)
            try:
                await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
        return self.events.popleft() if self.events else None


def _slot_timeout(waiter: asyncio.Future[bool]) -> None:
    """Timer callback: a wait for a call slot timed out."""
    if not waiter.done():
        waiter.set_result(False)


def _wake(waiter: asyncio.Future[None]) -> None:
    """Timer callback: wake a waiter without an event (a timeout)."""
    if not waiter.done():
        waiter.set_result(None)


class Session:
    """The client end of one session stream (see the module docstring).

    Created by :class:`~remotemedia.remote.client.RemoteProxyClient` for each
    attempt to open a session; ``Open`` is queued at construction.
    """

    def __init__(self, call: Any, fmt: int, config: RemoteExecutorConfig,
                 open_messages: Iterable[Any]) -> None:
        self.fmt = fmt
        self.target = config.target
        self.timeout = config.timeout
        self.timeout_ms = int(config.timeout * 1000)
        self.call_timeout = config.timeout + local_grace(config.timeout)
        self.session_id = ""
        self.ready: Any = None
        self.prefetch = 4
        self._call = call
        self._loop = asyncio.get_running_loop()
        self._phase = _OPENING
        self._closing = False
        self._next_id = 1
        self._chunk_size = wire.CHUNK_SIZE
        self._max_value = 0
        self._pending: Dict[int, CallState] = {}
        # The server's count of calls in flight (--max-inflight-calls):
        # every call sent until its last answer, cancelled ones too (a
        # cancelled call is answered as well). Calls over the limit wait
        # for a slot, in order, rather than end the session.
        self._max_inflight = 0
        self._unanswered: Set[int] = set()
        self._result_chunks: Set[int] = set()  # results still arriving in chunks
        self._slot_waiters: Deque[asyncio.Future[bool]] = collections.deque()
        self._slots_promised = 0  # waiters woken that have not sent yet
        self._gc_cancels: Deque[CallState] = collections.deque()
        self._assembler = wire.ValueAssembler()
        self._output = wire.OutputLines()
        self._open_events = CallState(0, "open")  # Progress, Ready, StreamEnd
        # The reader woke a waiter (_hand): it lets it run before reading
        # on (_read_loop).
        self._handed_over = False
        # The timer that bounds the calls' waits (_watch).
        self._watch_timer: Optional[asyncio.TimerHandle] = None
        self._session_error: Any = None
        self._failure: Optional[Callable[[], RemoteMediaError]] = None
        # The writer: batches (iterators of messages) and _HALF_CLOSE, the
        # write under way and the future it waits for, and whether writing
        # has stopped for good.
        self._outbox: Deque[Any] = collections.deque()
        self._writing: Optional[Coroutine[Any, Any, Any]] = None
        self._waited: Optional[asyncio.Future[Any]] = None
        self._write_stopped = False
        self._write_cancelled = False
        # Called with the session when its proxy is collected (the client
        # forgets it then).
        self.on_abandon: Optional[Callable[[Session], None]] = None
        # The client's connection the stream is on (client.py).
        self.connection: Any = None
        self._reader = self._loop.create_task(self._read_loop())
        self._send(open_messages)

    # ------------------------------------------------------------------
    # State

    @property
    def short_id(self) -> str:
        """The first 8 characters of the session id, for log prefixes."""
        return self.session_id[:8] if self.session_id else "opening"

    @property
    def closed(self) -> bool:
        """True once the session can take no more calls."""
        return self._failure is not None

    def _check_usable(self) -> None:
        """Raise the session's failure if it can take no more calls."""
        if self._failure is not None:
            raise self._failure()
        if self._phase != _READY or self._closing:
            raise SessionClosedError(f"session {self.short_id} is not open")

    def check_loop(self) -> None:
        """Raise RuntimeError unless called on the session's own event loop:
        the answer would be delivered to that loop, never to this one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self._loop:
            raise RuntimeError(
                f"session {self.short_id} belongs to the event loop it was created "
                "on: await its proxy and generators there (from another thread, "
                "use asyncio.run_coroutine_threadsafe)")

    # ------------------------------------------------------------------
    # Opening

    async def headers(self) -> Any:
        """The stream's response headers (gRPC's initial metadata), or None
        if it ended without any (gRPC then gives empty ones)."""
        headers = await self._call.initial_metadata()
        if not headers and self._call.done():
            return None
        return headers

    async def next_open_event(self, timeout: float) -> Any:
        """The next ``Progress``, ``Ready`` or :class:`StreamEnd`, or None on timeout."""
        return await self._open_events.next_event(max(timeout, 0.0))

    def set_ready(self, ready: Any) -> None:
        """Enter the ready phase with the server's ``Ready`` message.

        Adopts the server's chunk size, value size and prefetch limits when
        it sets them.
        """
        self.ready = ready
        self.session_id = str(ready.session_id)
        limits = ready.limits
        if 0 < limits.max_chunk_bytes < wire.CHUNK_SIZE:
            self._chunk_size = int(limits.max_chunk_bytes)
        self._max_value = int(limits.max_value_bytes)
        if limits.prefetch_items > 0:
            self.prefetch = int(limits.prefetch_items)
        self._max_inflight = int(limits.max_inflight_calls)
        self._phase = _READY

    def _on_opening_event(self, message: Any) -> None:
        """Progress and Ready go to :meth:`next_open_event` while opening."""
        if self._phase == _OPENING:
            self._hand(self._open_events, message)
        else:
            log.debug("[session %s] ignoring a late %s", self.short_id,
                      type(message).__name__)

    # ------------------------------------------------------------------
    # Calls

    def start_call(self, name: str, kind: int, doc: Optional[bytes]) -> CallState:
        """Allocate the next call id and queue ``Call`` and its arg chunks.

        Raises:
            SessionClosedError, WorkerDiedError, ConnectionLostError, ...:
                the session can take no more calls.
            ValueError: the arguments exceed the session's value limit.
        """
        self.check_loop()
        return self._start_call(name, kind, doc)

    def _start_call(self, name: str, kind: int, doc: Optional[bytes]) -> CallState:
        """:meth:`start_call`, on the loop that the caller checked."""
        self._check_usable()
        if self._gc_cancels:
            self._flush_cancels()
        if doc is not None and 0 < self._max_value < len(doc):
            raise ValueError(
                f"arguments of {name}() are {len(doc)} bytes, over the session's "
                f"limit of {self._max_value} bytes")
        call_id = self._next_id
        # Made first: a name that cannot be encoded (a lone surrogate)
        # raises before the call holds an id or a slot.
        messages = wire.call_messages(call_id, name, kind, doc, self.timeout_ms,
                                      self._chunk_size)
        self._next_id += 1
        state = CallState(call_id, name)
        self._pending[call_id] = state
        self._unanswered.add(call_id)
        self._send(messages)
        return state

    async def next_event(self, state: CallState, what: str) -> Event:
        """Wait (at most the call timeout) for the next event of ``state``.

        Raises the exception of an ``error`` event. On local expiry the call
        is cancelled on the server and :class:`RemoteTimeoutError` raised.
        """
        event = await state.next_event(self.call_timeout, self._watch, self._loop)
        if event is None:
            self.cancel(state)
            # The server's answer did not come: a call that ignores its
            # deadline has its worker killed 2 s past it, and the session
            # ends (the next call says so).
            raise RemoteTimeoutError(
                f"{what} timed out after {self.timeout:g}s (a call that does not stop "
                "has its session's worker killed 2 s past its deadline)",
                code=grpc.StatusCode.DEADLINE_EXCEEDED)
        if event[0] == "error":
            raise event[1]
        return event

    async def call(self, name: str, kind: int, doc: Optional[bytes]) -> Tuple[bool, Any]:
        """Make one call and wait for its answer.

        Returns ``(False, value)`` for a plain result, or ``(True, state)``
        when the result is a generator (``Result{generator: true}``). If the
        waiting task is cancelled, the call is abandoned on the server
        (``Cancel``).
        """
        self.check_loop()  # before the slot's bookkeeping, which is the loop's
        if self._max_inflight and (self._slot_waiters or self._slots_full()):
            await self._wait_slot(name)
        try:
            state = self._start_call(name, kind, doc)
        except BaseException:
            if self._slot_waiters:
                self._wake_slots()  # the slot it waited for is still free
            raise
        try:
            event = await self.next_event(state, f"call {name}()")
        except asyncio.CancelledError:
            self.cancel(state)
            raise
        if event[0] == "generator":
            return True, state
        return False, self.decode(event[1], f"the result of {name}()")

    def decode(self, data: Any, what: str) -> Any:
        """A result or item, decoded. One that cannot be decoded here (its
        class is not on the client, its ``__reduce__`` fails) raises
        RemoteExecutionError naming ``what``, the error chained: it is not
        the remote code's exception, and must not pass for one."""
        try:
            return wire.decode_value(self.fmt, data)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # what unpickling runs may raise anything
            hint = ""
            if isinstance(exc, ImportError):
                hint = (" (the module is on the server only: install it on the client, "
                        "or return plain data)")
            raise RemoteExecutionError(
                f"{what} cannot be decoded on the client: {type(exc).__name__}: {exc}{hint}"
            ) from exc

    async def _wait_slot(self, name: str) -> None:
        """Wait, behind the calls that already wait, until the server has
        room for one more call (within the call timeout). The waiter's
        result says which came: a slot (True) or the timeout (False). A
        bare future and a timer, not asyncio.wait_for, which up to Python
        3.11 may drop a cancellation that comes with the wake."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        timer = self._loop.call_at(self._loop.time() + self.call_timeout,
                                   _slot_timeout, waiter)
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._slots_promised -= 1  # woken, but it goes: the next one may
                self._wake_slots()
            elif waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
            raise
        finally:
            timer.cancel()
        if not got:
            if waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
            raise RemoteTimeoutError(
                f"call {name}() waited {self.timeout:g}s for one of the session's "
                f"{self._max_inflight} calls in flight (--max-inflight-calls) to end",
                code=grpc.StatusCode.DEADLINE_EXCEEDED)
        self._slots_promised -= 1  # start_call takes it now

    def _slots_full(self) -> bool:
        return len(self._unanswered) + self._slots_promised >= self._max_inflight

    def _wake_slots(self) -> None:
        """Wake waiting calls, first come first, while the server has room."""
        while self._slot_waiters and not self._slots_full():
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._slots_promised += 1

    def _answered(self, call_id: int) -> None:
        """A call's last answer came: its slot is free."""
        self._unanswered.discard(call_id)
        if self._slot_waiters:
            self._wake_slots()

    def pull(self, state: CallState, n: int) -> None:
        """Queue ``Pull{call_id, n}``: credit for n more items.

        Nothing is sent for a generator that has already ended.
        """
        if self._pending.get(state.call_id) is not state or state.cancelled:
            return
        if self._phase == _READY and not self._closing:
            self._send((wire.pull_message(state.call_id, n, self.timeout_ms),))

    def cancel(self, state: CallState) -> bool:
        """Stop a generator or abandon a pending call (``Cancel{call_id}``).

        A plain call is forgotten at once; a generator stays registered until
        its ``End`` (or ``Error``), and items that arrive meanwhile are
        dropped. Returns True when a ``Cancel`` was queued.
        """
        if state.cancelled:
            return False
        state.cancelled = True
        if self._pending.get(state.call_id) is not state:
            return False
        if not state.generator:
            del self._pending[state.call_id]
            self._assembler.discard(state.call_id)
        if self._phase != _READY or self._closing:
            return False
        self._send((wire.cancel_message(state.call_id),))
        return True

    def cancel_threadsafe(self, state: CallState) -> None:
        """Cancel ``state`` soon, from ``__del__`` of an abandoned generator.

        ``__del__`` may run in any thread and at any point (cyclic GC can
        interrupt the session's own code), so this only records the state
        and schedules the real :meth:`cancel` on the loop. A call made
        before that runs flushes the record first, so the ``Cancel`` still
        reaches the server ahead of the next ``Call``. Never raises.
        """
        try:
            self._gc_cancels.append(state)
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._flush_cancels)
        except Exception:
            pass

    def _flush_cancels(self) -> None:
        """Send the cancels recorded by :meth:`cancel_threadsafe`."""
        while True:
            try:
                state = self._gc_cancels.popleft()
            except IndexError:
                return
            self.cancel(state)

    async def drain(self, state: CallState) -> None:
        """After :meth:`cancel` of a generator, wait for its ``End`` (bounded)."""
        loop = self._loop
        deadline = loop.time() + self.timeout
        while True:
            event = await state.next_event(max(0.0, deadline - loop.time()))
            if event is None or event[0] in ("end", "error"):
                return

    def _watch(self, state: CallState) -> bool:
        """Bound the wait of a pending call at ``state.deadline`` with the
        session's one timer: it is set for the earliest deadline, and when
        it fires it wakes the waits that are due and is set again for the
        next. A timer per wait cost about 10 us of each call's round trip.
        False for a state that is not pending: its wait needs its own."""
        if self._pending.get(state.call_id) is not state:
            return False
        timer = self._watch_timer
        if timer is None or state.deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._watch_timer = self._loop.call_at(state.deadline, self._on_watch)
        return True

    def _on_watch(self) -> None:
        self._watch_timer = None
        now = self._loop.time()
        soonest: Optional[float] = None
        for state in self._pending.values():
            waiter = state.waiter
            if waiter is None or waiter.done():
                continue
            if state.deadline <= now:
                waiter.set_result(None)  # next_event returns None: a timeout
            elif soonest is None or state.deadline < soonest:
                soonest = state.deadline
        if soonest is not None:
            self._watch_timer = self._loop.call_at(soonest, self._on_watch)

    # ------------------------------------------------------------------
    # Reader: dispatch of ServerMessages

    async def _read_loop(self) -> None:
        """Read until the stream ends, then fail what is pending."""
        code, details = grpc.StatusCode.OK, ""
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    break
                self._dispatch(message)
                if self._handed_over:
                    # Let the waiter that the message woke run before the
                    # next read is armed, which then overlaps the caller's
                    # next round trip. Armed first, it kept the caller
                    # waiting: on the development VM a caller resumed 57-68
                    # us after its result was dispatched, and 10-15 us
                    # with the read armed after it.
                    self._handed_over = False
                    await asyncio.sleep(0)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        except asyncio.CancelledError:
            task = asyncio.current_task()
            code, details = grpc.StatusCode.CANCELLED, "stream cancelled by the client"
            if task is not None and task.cancelling():
                self._finish(code, details)
                raise
        except Exception as exc:  # a bug in dispatch, or an undecodable message
            log.exception("[session %s] cannot handle a server message", self.short_id)
            code, details = grpc.StatusCode.INTERNAL, f"client error: {exc!r}"
            self._call.cancel()
        self._finish(code, details)

    def _dispatch(self, message: Any) -> None:
        """Route one ServerMessage (or a wire.Continuation) to its handler."""
        if type(message) is wire.Continuation:
            self._on_value(message)
            return
        kind = message.WhichOneof("msg") if message is not None else None
        handler = _HANDLERS.get(kind or "")
        if handler is None:
            log.debug("[session %s] ignoring server message %r", self.short_id, kind)
            return
        handler(self, getattr(message, kind))

    def _on_result(self, result: Any) -> None:
        if not result.generator:
            if result.value.more:
                self._result_chunks.add(result.call_id)
            else:
                self._answered(result.call_id)
        state = self._pending.get(result.call_id)
        if state is None:
            return
        if result.generator:
            state.generator = True
            self._hand(state, ("generator",))
            return
        self._start_value(result.call_id, result.value, "result")

    def _on_item(self, item: Any) -> None:
        if item.call_id in self._pending:
            self._start_value(item.call_id, item.value, "item")

    def _start_value(self, call_id: int, value: Any, tag: str) -> None:
        try:
            done = self._assembler.start(call_id, value, tag)
        except wire.ProtocolError as exc:
            self._fail_call(call_id, exc)
            return
        if done is not None:
            self._deliver(call_id, done[0], done[1])

    def _on_value(self, value: Any) -> None:
        if not value.more and value.call_id in self._result_chunks:
            self._result_chunks.discard(value.call_id)
            self._answered(value.call_id)
        try:
            done = self._assembler.feed(value)
        except KeyError:
            return  # a value of a call that was abandoned
        except wire.ProtocolError as exc:
            self._fail_call(value.call_id, exc)
            return
        if done is not None:
            self._deliver(value.call_id, done[0], done[1])

    def _deliver(self, call_id: int, tag: str, data: bytes) -> None:
        """Hand a complete result or item to its call."""
        state = self._pending.get(call_id)
        if state is None:
            return
        if tag == "result":
            del self._pending[call_id]
            self._hand(state, ("result", data))
        elif not state.cancelled:
            # Not handed over: the next item is likely on its way already,
            # and its read comes first.
            state.push(("item", data))

    def _hand(self, state: CallState, event: Event) -> None:
        """Give a call (or the opening) an event that ends its wait: the
        next message depends on what its waiter does."""
        if state.push(event):
            self._handed_over = True

    def _fail_call(self, call_id: int, exc: Exception) -> None:
        state = self._pending.pop(call_id, None)
        self._assembler.discard(call_id)
        if state is not None:
            self._hand(state, ("error", RemoteExecutionError(f"protocol error: {exc}")))

    def _on_error(self, error: Any) -> None:
        if error.call_id == 0:
            self._session_error = error
            # The exception behind the status to come, which carries it.
            log.debug("[session %s] session error: %s: %s", self.short_id,
                      error.type, error.message)
            return
        self._result_chunks.discard(error.call_id)
        self._answered(error.call_id)
        # Built before the call leaves _pending: were it to raise, the
        # stream's end would still fail the call.
        exc = exception_from_error(error, self.fmt)
        state = self._pending.pop(error.call_id, None)
        self._assembler.discard(error.call_id)
        if state is not None:
            self._hand(state, ("error", exc))

    def _on_end(self, end: Any) -> None:
        self._answered(end.call_id)
        state = self._pending.pop(end.call_id, None)
        self._assembler.discard(end.call_id)
        if state is not None:
            self._hand(state, ("end", bool(end.cancelled)))

    def _on_output(self, output: Any) -> None:
        """Log what user code printed, line by line: stdout at INFO, stderr
        at WARNING."""
        if output.dropped_bytes:
            # The count comes with the next Output, of either stream:
            # an unfinished line of either may have lost its rest.
            self._flush_output()
            log_remote(logging.WARNING, "[session %s] %d bytes of output dropped by the "
                       "server's rate limit", self.short_id, output.dropped_bytes)
        self._log_output(output.stream, self._output.feed(output.stream, output.data))

    def _flush_output(self) -> None:
        """Log every stream's unfinished line as it is."""
        for stream in self._output.streams():
            self._log_output(stream, self._output.flush(stream))

    def _log_output(self, stream: int, lines: List[str]) -> None:
        level = logging.WARNING if stream == pb.Output.STDERR else logging.INFO
        for line in lines:
            log_remote(level, "[session %s] %s", self.short_id, line)

    def _finish(self, code: grpc.StatusCode, details: str) -> None:
        """The stream ended: record why and fail every pending call."""
        if self._phase == _OPENING:
            self._open_events.push(StreamEnd(code, details))
        self._phase = _ENDED
        self._flush_output()  # what it printed last, unended
        if self._failure is None:
            if self._closing:
                closed = f"session {self.short_id} is closed"
                self._failure = lambda: SessionClosedError(closed)
            else:
                target, error = self.target, self._session_error
                self._failure = lambda: exception_from_status(code, details, target, error)
        quiet = (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED)
        if code not in quiet and not self._closing and self.session_id:
            log.warning("[session %s] ended: %s: %s", self.short_id, code.name, details)
        for state in self._pending.values():
            state.push(("error", self._failure()))
        self._pending.clear()
        self._unanswered.clear()
        while self._slot_waiters:  # each finds the session failed
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._slots_promised += 1
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None

    # ------------------------------------------------------------------
    # Writer

    def _send(self, batch: Any) -> None:
        """Queue a batch of messages (or _HALF_CLOSE) and start writing it
        unless a write is under way. Dropped once writing has stopped."""
        if self._write_stopped:
            return
        self._outbox.append(batch if batch is _HALF_CLOSE else iter(batch))
        if self._writing is None:
            self._write_next()

    def _write_next(self) -> None:
        """Start the queued writes, in order, until one has to wait."""
        while self._writing is None and self._outbox and not self._write_stopped:
            head = self._outbox[0]
            try:
                if head is _HALF_CLOSE:
                    self._outbox.clear()
                    self._write_stopped = True
                    coro = self._call.done_writing()
                else:
                    message = next(head, None)
                    if message is None:  # the batch is all written
                        self._outbox.popleft()
                        continue
                    coro = self._call.write(message)
            except Exception:
                log.exception("[session %s] cannot write a message", self.short_id)
                self._write_failed()
                return
            self._writing = coro
            self._advance(coro)

    def _advance(self, coro: Coroutine[Any, Any, Any],
                 exc: Optional[BaseException] = None) -> None:
        """Run the write ``coro`` to its next wait, as a task's step does.

        The asyncio future it waits for (gRPC's) resumes it once done, and a
        bare yield at the loop's next turn. When it ends, the next write may
        start. A write that fails ends the writing: the stream is over, and
        the reader reports its status.
        """
        try:
            waited = coro.send(None) if exc is None else coro.throw(exc)
        except StopIteration:
            self._writing = None
            return
        except (asyncio.CancelledError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self._writing = None
            log.debug("[session %s] write failed: %r", self.short_id, exc)
            self._stop_writing()
            return
        except Exception:
            self._writing = None
            log.exception("[session %s] cannot write a message", self.short_id)
            self._write_failed()
            return
        if waited is None:
            self._loop.call_soon(self._resume, coro)
        elif getattr(waited, "_asyncio_future_blocking", False):
            waited._asyncio_future_blocking = False
            self._waited = waited
            waited.add_done_callback(lambda _: self._resume(coro))
        else:  # what no task could wait for either
            coro.close()
            self._writing = None
            log.error("[session %s] a write waited for %r", self.short_id, waited)
            self._write_failed()

    def _resume(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._writing is coro:
            self._waited = None
            self._advance(coro, asyncio.CancelledError() if self._write_cancelled else None)
            self._write_next()

    def _stop_writing(self) -> None:
        """Write nothing more. A write under way is cancelled as a task's
        would be: the future it waits for is, and its next step gets
        CancelledError even if that future was done already."""
        self._write_stopped = self._write_cancelled = True
        self._outbox.clear()
        if self._waited is not None:
            self._waited.cancel()

    def _write_failed(self) -> None:
        """A bug in writing: end the stream, whose status the reader reports."""
        self._stop_writing()
        self._call.cancel()

    # ------------------------------------------------------------------
    # Lifecycle

    async def close(self) -> None:
        """End the session: ``Close``, half-close, wait for the stream's end.

        Waits at most ``timeout`` for the server to end the stream, then
        cancels it. Pending and later calls raise :class:`SessionClosedError`.
        Idempotent.
        """
        if self._closing:
            await self._wait_tasks()
            return
        self._closing = True
        if self._phase == _READY:
            self._send((wire.close_message(),))
            self._send(_HALF_CLOSE)
            await asyncio.wait({self._reader}, timeout=self.timeout)
        await self._wait_tasks()
        closed = f"session {self.short_id} is closed"
        self._failure = lambda: SessionClosedError(closed)

    def close_soon(self) -> None:
        """End the session without waiting, from any thread: its proxy and
        all made from it were garbage-collected. ``Close`` goes from the
        session's loop; if that loop is closed, the stream is cancelled."""
        if self._closing or self._failure is not None or sys.is_finalizing():
            return  # at exit, the connection's end ends the session
        try:
            self._loop.call_soon_threadsafe(self._close_abandoned)
            return
        except RuntimeError:  # the loop is closed: no Close can be sent
            pass
        self._closing = True
        if self.on_abandon is not None:
            self.on_abandon(self)
        if not self._call.done():
            self._call.cancel()

    def _close_abandoned(self) -> None:
        if self._closing:
            return
        log.debug("[session %s] its proxy was garbage-collected: closing it",
                  self.short_id)
        if self.on_abandon is not None:
            self.on_abandon(self)
        task = self._loop.create_task(self.close())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def abort(self) -> None:
        """Cancel the stream at once (a failed or abandoned open)."""
        self._closing = True
        await self._wait_tasks()

    async def _wait_tasks(self) -> None:
        """Cancel the stream if it still runs, stop the writer and reap the reader."""
        if not self._reader.done():
            self._call.cancel()
        await asyncio.wait({self._reader}, timeout=5.0)
        self._stop_writing()
        task = self._reader
        if not task.done():
            task.cancel()
        try:
            await task
        except BaseException:  # already reported by the task itself
            if task.cancelled() and _current_task_cancelling():
                raise
        if self._failure is None:
            self._finish(grpc.StatusCode.CANCELLED, "session closed")
        # The call holds its connection: a proxy kept after the client's
        # disconnect would keep the closed channel's connection open.
        self._call = _ENDED_CALL


class _EndedCall:
    """What a session holds of its gRPC call once the stream is over and
    its tasks are done: the little they may still ask of it."""

    @staticmethod
    def cancel() -> bool:
        return False

    @staticmethod
    def done() -> bool:
        return True


_ENDED_CALL = _EndedCall()


# Closes of abandoned sessions, held until done (the loop keeps only weak
# references to its tasks). One whose loop is closed before it finishes
# stays here, with its session: a few objects, for a loop closed with
# tasks still pending, which asyncio itself warns of.
_BACKGROUND: Set[asyncio.Task[None]] = set()


# Session's handler of each ServerMessage kind. A dict of the session's
# bound methods made each Session a reference cycle: it lived on, with its
# gRPC call and so its connection, until the cycle collector ran.
_HANDLERS: Dict[str, Callable[[Session, Any], None]] = {
    "progress": Session._on_opening_event,
    "ready": Session._on_opening_event,
    "result": Session._on_result,
    "value": Session._on_value,
    "item": Session._on_item,
    "error": Session._on_error,
    "end": Session._on_end,
    "output": Session._on_output,
}


def _current_task_cancelling() -> bool:
    """True when the running task has been asked to cancel."""
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())
