"""RemoteProxyClient: a gRPC channel to ``remotemediad`` and its sessions.

One client holds one HTTP/2 channel (h2c, or TLS when ``ssl_enabled``).
Each :meth:`RemoteProxyClient.create_proxy` opens one
``RemoteExecution/Session`` stream, i.e. one sandboxed worker on the server,
and returns a :class:`~remotemedia.remote.proxy.RemoteProxy` for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import ssl
import sys
from types import TracebackType
from typing import Any, Callable, List, Optional, Set, Tuple, Type

import grpc

from remotemedia import __version__
from remotemedia.core.exceptions import (
    ConnectionLostError,
    RemoteExecutionError,
    RemoteTimeoutError,
    SessionClosedError,
)
from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import wire
from remotemedia.remote.errors import exception_from_status
from remotemedia.remote.proxy import RemoteProxy
from remotemedia.remote.session import SESSION_METHOD, Session, StreamEnd, log_remote
from remotemedia.remote.wire import pb

__all__ = ["RemoteProxyClient", "ProgressCallback"]

log = logging.getLogger("remotemedia.remote")

#: Receives each ``remotemedia.v1.Progress`` message; may be a coroutine function.
ProgressCallback = Callable[[Any], Any]

#: Largest gRPC message either side may send (chunks are at most 1 MiB).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

#: How long (s) the other opens of a burst on a new connection wait for the
#: first one's response headers, which say the server's bound of sessions
#: per connection; a round trip with a server that sends them at once.
PROBE_GRACE = 0.5

#: Where Debian keeps the system CA bundle.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

_BACKOFF_BASE = 0.1


def backoff_delay(attempt: int) -> float:
    """Jittered exponential backoff before retry ``attempt`` (1, 2, ...)."""
    return float(_BACKOFF_BASE * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.5))


def connect_failure(cfg: RemoteExecutorConfig, attempts: int, details: str) -> str:
    """The message of a session that could not be opened, UNAVAILABLE at
    each attempt: the last status's details, and over TLS a hint when they
    tell of a handshake cut short. Those are grpcio's when the server was
    not reached, the server's own when it could not start the session (it
    is shutting down, or cannot start a worker): the message claims neither.

    When the server's certificate is not trusted, grpcio reports either the
    verification failure or, depending on timing, only that the handshake
    ended ("Handshake read failed", "tcp handshaker shutdown", "Failed to
    connect to remote host: FD Shutdown").
    """
    message = (f"cannot open a session on {cfg.target} ({attempts} attempt"
               f"{'s' if attempts > 1 else ''}): {details}")
    low = details.lower()
    if not cfg.ssl_enabled or "certificate" in low:
        return message
    trust = (f"the CA in ca_file ({cfg.ca_file})" if cfg.ca_file is not None
             else "a CA of the system bundle")
    check = f"and that its certificate is signed by {trust} and names {cfg.host}"
    if "handshake" in low:
        message += (f" (the TLS handshake did not complete: check that the server "
                    f"speaks TLS, {check})")
    elif "fd shutdown" in low:  # also grpcio's word for a connect that timed out
        message += (f" (the connection or its TLS handshake was cut short: check that "
                    f"the server is reachable and speaks TLS, {check})")
    return message


def _read_file(path: Any) -> bytes:
    with open(os.fspath(path), "rb") as f:
        return f.read()


def _no_passphrase() -> bytes:
    raise ValueError("the key is encrypted: gRPC takes only unencrypted keys")


def _check_pem(cfg: RemoteExecutorConfig) -> None:
    """Raise ValueError, naming the file, for TLS files that gRPC would
    refuse with only a vague connection error: a ca_file without a PEM
    certificate, a client certificate and key that are not PEM or not a
    pair. A missing file raises OSError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # gRPC (BoringSSL) takes keys that OpenSSL's default security level
    # refuses (a 1024-bit RSA key): check the files, not that policy.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if cfg.ca_file is not None:
        _read_file(cfg.ca_file)  # OSError first, as for the other files
        try:
            ctx.load_verify_locations(cafile=os.fspath(cfg.ca_file))
        except ssl.SSLError as exc:
            raise ValueError(f"ca_file {os.fspath(cfg.ca_file)!r} holds no PEM "
                             f"certificate that can be read: {exc}") from None
    if cfg.client_cert_file is not None:
        cert, key = os.fspath(cfg.client_cert_file), os.fspath(cfg.client_key_file)
        _read_file(cert)
        _read_file(key)
        try:
            ctx.load_cert_chain(cert, key, password=_no_passphrase)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"client_cert_file {cert!r} and client_key_file {key!r} "
                             f"are not a PEM certificate and its key: {exc}") from None


def _type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    module = getattr(cls, "__module__", "")
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in ("builtins", "__main__", "") else f"{module}.{qualname}"


class _Connection:
    """One channel of the client's, so one HTTP/2 connection of its own
    (``grpc.use_local_subchannel_pool``), and the sessions opening on it."""

    __slots__ = ("channel", "rpc", "opening", "max_streams", "probe", "hold_until")

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.rpc = channel.stream_stream(
            SESSION_METHOD,
            request_serializer=wire.serialize,
            response_deserializer=wire.parse_server_message,
        )
        self.opening = 0
        # The server's bound of sessions on this connection (0: unknown),
        # the task that reads it from the response headers of the first
        # session opening here, and until when (the loop's time) other
        # opens wait for it.
        self.max_streams = 0
        self.probe: Optional[asyncio.Task[None]] = None
        self.hold_until = 0.0


class RemoteProxyClient:
    """Client for creating transparent proxies of Python objects on a server.

    Use it as ``async with RemoteProxyClient(config) as client:`` (connects
    on enter; on exit closes all of its sessions and the channel), or call
    :meth:`connect` and :meth:`disconnect` yourself.

    A session is one stream, and the server takes at most
    ``--max-streams`` at once on one connection (the first stream's
    response headers say it, and every ``Ready.limits.max_streams``):
    sessions beyond that go on another connection of the client's, opened
    then.
    """

    def __init__(self, config: RemoteExecutorConfig) -> None:
        if not isinstance(config, RemoteExecutorConfig):
            raise TypeError(
                f"config must be a RemoteExecutorConfig, not {type(config).__name__}")
        self._config = config
        self._conns: List[_Connection] = []  # the first made by connect()
        self._max_streams = 0  # sessions per connection, once a Ready said
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._sessions: Set[Session] = set()
        self._metadata: Optional[Tuple[Tuple[str, str], ...]] = None
        if config.auth_token:
            self._metadata = (("authorization", f"Bearer {config.auth_token}"),)

    @property
    def config(self) -> RemoteExecutorConfig:
        """The configuration this client was made with."""
        return self._config

    async def __aenter__(self) -> RemoteProxyClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.disconnect()

    # ------------------------------------------------------------------
    # Channel

    async def connect(self) -> None:
        """Create the gRPC channel to ``host:port`` (idempotent).

        The channel starts connecting in the background; nothing is sent
        until :meth:`create_proxy`, which reports an unreachable server
        (after ``max_retries`` retries) as :class:`ConnectionLostError`.
        With ``ssl_enabled`` it reads the CA and client certificate files
        here, so a missing file raises ``OSError``, and a file that holds
        no PEM certificate (or a key that does not match its certificate)
        ``ValueError``.
        """
        self._check_loop()
        if self._conns:
            return
        self._conns.append(self._new_connection())
        self._loop = asyncio.get_running_loop()

    def _new_connection(self) -> _Connection:
        conn = _Connection(self._make_channel())
        conn.channel.get_state(try_to_connect=True)
        return conn

    def _connection(self) -> _Connection:
        """The first connection with room for one more session, or a new one.

        None left means that disconnect() ran since create_proxy connected:
        a retry must not connect the client again behind its back.
        """
        if not self._conns:
            raise SessionClosedError("the client was disconnected while the session opened")
        for conn in self._conns:
            limit = conn.max_streams or self._max_streams
            if not limit:
                return conn
            held = conn.opening + sum(1 for s in self._sessions
                                      if s.connection is conn and not s.closed)
            if held < limit:
                return conn
        conn = self._new_connection()
        self._conns.append(conn)
        log.debug("connection %d to %s: the others hold their --max-streams sessions",
                  len(self._conns), self._config.target)
        return conn

    def _make_channel(self) -> grpc.aio.Channel:
        """An h2c channel, or a TLS one verified against ``ca_file`` or the system bundle."""
        cfg = self._config
        options: List[Tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", f"remotemedia-python/{__version__}"),
            # Reconnect quickly so that create_proxy's own retries can succeed.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # A connection of this client's own: channels to one target
            # otherwise share one, and with it the server's --max-streams
            # (sessions per connection).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if not cfg.ssl_enabled:
            return grpc.aio.insecure_channel(cfg.target, options=options)
        _check_pem(cfg)
        roots: Optional[bytes] = None
        if cfg.ca_file is not None:
            roots = _read_file(cfg.ca_file)
        elif os.path.exists(SYSTEM_CA_BUNDLE):
            roots = _read_file(SYSTEM_CA_BUNDLE)
        key = _read_file(cfg.client_key_file) if cfg.client_key_file is not None else None
        chain = _read_file(cfg.client_cert_file) if cfg.client_cert_file is not None else None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=chain)
        return grpc.aio.secure_channel(cfg.target, credentials, options=options)

    def _check_loop(self) -> None:
        """Raise RuntimeError if the client is connected on another event
        loop that still runs. On a closed one, the channel and sessions
        are gone with it: the client starts afresh."""
        loop = self._loop
        if loop is None or asyncio.get_running_loop() is loop:
            return
        if not loop.is_closed():
            raise RuntimeError(
                "this client is connected on another event loop: use it there "
                "(from another thread, use asyncio.run_coroutine_threadsafe)")
        self._sessions.clear()
        self._conns, self._loop = [], None

    async def disconnect(self) -> None:
        """Close every session of this client, then the channel (idempotent).

        Each session is ended with ``Close`` and a half-close, and waited for
        at most ``timeout``; pending and later calls on its proxies raise
        :class:`SessionClosedError`.
        """
        self._check_loop()
        # Sessions opened while these close are closed too (create_proxy
        # checks the channel once Ready, for the ones still opening).
        while self._sessions:
            sessions = list(self._sessions)
            self._sessions.clear()
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        conns, self._conns = self._conns, []
        self._loop = None
        for conn in conns:
            await conn.channel.close()

    # ------------------------------------------------------------------
    # Sessions

    async def create_proxy(self, obj: Any, serialization_format: str = "pickle",
                           progress: Optional[ProgressCallback] = None) -> RemoteProxy:
        """Host ``obj`` in a new remote session and return its RemoteProxy.

        Connects first if :meth:`connect` was not called. On the wire: opens a ``Session`` stream and sends ``Open`` with
        ``obj`` cloudpickled (the user's own modules travel by value), the
        format, ``pip_packages`` as requirements, and the client's Python and
        cloudpickle versions; the object continues in 1 MiB ``Value`` chunks
        if it is larger. Then waits for ``Ready``: each ``Progress`` restarts
        the ``timeout`` clock and goes to ``progress``; without a callback it
        drives a progress bar on stderr when stderr is a terminal, and is
        logged at INFO otherwise. If the server cannot be reached (UNAVAILABLE before
        ``Ready``), retries up to ``max_retries`` times with jittered
        backoff, within ``timeout``.

        Args:
            obj: any object cloudpickle can serialise.
            serialization_format: ``"pickle"`` or ``"json"``: how arguments,
                results and items travel. The object itself always goes by
                cloudpickle.
            progress: called with each ``Progress`` message (may be async).

        Raises:
            ValueError: unknown ``serialization_format``.
            RuntimeError: the client is connected on another event loop.
            InstallError: installing ``pip_packages`` failed.
            AuthenticationError: the server refused the token.
            ConnectionLostError: the server could not be reached, or could
                not start the session (it was shutting down, or could not
                start a worker): UNAVAILABLE at every attempt.
            RemoteTimeoutError: no ``Ready`` within ``timeout``.
            RemoteExecutionError: any other refusal (version mismatch, the
                object cannot be loaded), with ``.code`` and the server's
                message.
        """
        fmt = wire.FORMATS.get(serialization_format)
        if fmt is None:
            raise ValueError(
                f"serialization_format must be 'pickle' or 'json', not {serialization_format!r}")
        await self.connect()  # on this loop, once; refuses another's
        payload = wire.dump_object(obj)
        bar: Optional[TerminalProgress] = None
        if progress is None and _stderr_is_terminal():
            bar = TerminalProgress(sys.stderr)
        try:
            session = await self._open(payload, fmt, bar or progress)
        finally:
            if bar is not None:
                bar.finish()
        if session.connection not in self._conns:  # disconnect() ran meanwhile
            await session.close()
            raise SessionClosedError(
                f"session {session.short_id} was closed: the client disconnected while it opened")
        self._sessions.add(session)
        session.on_abandon = self._sessions.discard
        ready = session.ready
        if ready.python_version and ready.python_version != wire.python_version():
            log.warning("[session %s] server runs Python %s, client %s", session.short_id,
                        ready.python_version, wire.python_version())
        return RemoteProxy(session, dict(ready.attributes), _type_name(obj))

    async def close_proxy(self, proxy: Any) -> None:
        """End ``proxy``'s session: ``Close``, half-close, wait for the stream's end.

        The wait is bounded by ``timeout``, after which the stream is
        cancelled. Later calls on the proxy raise :class:`SessionClosedError`.
        Closing a proxy twice is harmless.
        """
        if not isinstance(proxy, RemoteProxy):
            raise TypeError(f"expected a RemoteProxy, not {type(proxy).__name__}")
        session: Session = proxy._rm_session
        session.check_loop()
        self._sessions.discard(session)
        await session.close()

    async def _open(self, payload: bytes, fmt: int,
                    progress: Optional[ProgressCallback]) -> Session:
        """Open a session, retrying connection failures; return it once Ready."""
        cfg = self._config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout
        attempt = 0
        while True:
            attempt += 1
            conn = await self._connection_with_room(deadline)
            session = Session(conn.rpc(metadata=self._metadata), fmt, cfg,
                              wire.open_messages(payload, fmt, cfg.pip_packages or []))
            session.connection = conn
            conn.opening += 1
            if conn.probe is None:
                conn.probe = loop.create_task(self._learn_max_streams(conn, session))
                # A probe that failed before its headers hands the hold on:
                # each open that fails so delays the others PROBE_GRACE at
                # most, where a stream past the bound would wait its whole
                # timeout in gRPC's queue.
                conn.hold_until = loop.time() + PROBE_GRACE
            try:
                end, deadline = await self._await_ready(session, deadline, progress)
            except BaseException:
                await session.abort()
                raise
            finally:
                conn.opening -= 1
            if end is None:
                if session.ready.limits.max_streams:
                    self._max_streams = int(session.ready.limits.max_streams)
                return session
            await session.abort()
            if end.code != grpc.StatusCode.UNAVAILABLE:
                raise exception_from_status(end.code, end.details, cfg.target,
                                            session._session_error)
            delay = backoff_delay(attempt)
            if attempt > cfg.max_retries or loop.time() + delay >= deadline:
                raise ConnectionLostError(connect_failure(cfg, attempt, end.details),
                                          code=end.code)
            log.debug("session open failed (%s), retry %d in %.2fs",
                      end.details, attempt, delay)
            await asyncio.sleep(delay)

    async def _connection_with_room(self, deadline: float) -> _Connection:
        """_connection(), once it can tell: a new connection with a session
        opening takes no other before that session's response headers
        said the server's bound of sessions per connection
        (``remotemedia-max-streams``), one round trip on, or PROBE_GRACE
        passed since that session started (a server that sends its headers
        with its first message only, as one before them did), or a Ready
        said the bound. Streams beyond the bound would otherwise
        wait, unsent, in gRPC's own queue until a session of that
        connection ended."""
        loop = asyncio.get_running_loop()
        while True:
            conn = self._connection()
            now = loop.time()
            if (conn.max_streams or self._max_streams or conn.probe is None
                    or conn.probe.done() or now >= conn.hold_until):
                return conn
            if now >= deadline:
                raise _open_timeout(self._config, " (waiting for the server's bound of "
                                                  "sessions per connection)")
            await asyncio.wait({conn.probe}, timeout=min(deadline, conn.hold_until) - now)

    @staticmethod
    async def _learn_max_streams(conn: _Connection, session: Session) -> None:
        """Read the bound from the headers of conn's first session. Headers
        without it (a server before it sent them) leave the bound to Ready;
        a stream that failed before its headers leaves the next session to
        open there to read its own."""
        try:
            headers = await session.headers()
        except (asyncio.CancelledError, Exception):  # the stream's end is the reader's to tell
            headers = None
        if headers is None:
            if conn.probe is asyncio.current_task():
                conn.probe = None
            return
        for key, value in headers:
            if key == "remotemedia-max-streams" and value.isascii() and value.isdigit():
                conn.max_streams = int(value)

    async def _await_ready(self, session: Session, deadline: float,
                           progress: Optional[ProgressCallback]) -> Tuple[Optional[StreamEnd], float]:
        """Wait for ``Ready``, handing on ``Progress``.

        Returns ``(None, deadline)`` once Ready, or ``(StreamEnd, deadline)``
        if the stream ended first; each ``Progress`` pushes the deadline to
        now + ``timeout``.
        """
        cfg = self._config
        loop = asyncio.get_running_loop()
        while True:
            event = await session.next_open_event(deadline - loop.time())
            if event is None:
                raise _open_timeout(cfg, " (the server was not reached, or loading the "
                                         "object there, its __setstate__ or its class's "
                                         "code, took longer)")
            if isinstance(event, StreamEnd):
                return event, deadline
            if isinstance(event, pb.Progress):
                deadline = loop.time() + cfg.timeout
                await _report_progress(progress, event)
                continue
            _check_protocol(event)
            session.set_ready(event)
            return None, deadline


def _open_timeout(cfg: RemoteExecutorConfig, hint: str) -> RemoteTimeoutError:
    return RemoteTimeoutError(
        f"no answer from {cfg.target} within {cfg.timeout:g}s while opening a session{hint}",
        code=grpc.StatusCode.DEADLINE_EXCEEDED)


class TerminalProgress:
    """A one-line progress bar on stderr, for installs shown on a terminal.

    pip's stages fill a bar of four steps (resolving, downloading,
    installing, done); the package being worked on is named beside it.
    """

    _STEPS = {pb.Progress.STAGE_RESOLVING: 1, pb.Progress.STAGE_DOWNLOADING: 2,
              pb.Progress.STAGE_INSTALLING: 3, pb.Progress.STAGE_DONE: 4}
    _WIDTH = 20

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._shown = False
        self._step = 0

    def __call__(self, event: Any) -> None:
        self._step = max(self._step, self._STEPS.get(event.stage, 0))
        filled = self._WIDTH * self._step // 4
        bar = "#" * filled + "." * (self._WIDTH - filled)
        what = wire.format_progress(event).split(":", 1)[0]
        line = f"remotemedia: installing [{bar}] {what}"
        self._stream.write("\r\x1b[K" + line[:200])
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Clear the bar's line, once the session is ready or has failed."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


async def _report_progress(progress: Optional[ProgressCallback], event: Any) -> None:
    """Give a Progress message to the user's callback, or log it at INFO.

    Raising from the callback aborts ``create_proxy`` with that exception.
    """
    if progress is None:
        log_remote(logging.INFO, "[session opening] %s", wire.format_progress(event))
        return
    result = progress(event)
    if inspect.isawaitable(result):
        await result


def _check_protocol(ready: Any) -> None:
    """Refuse a ``Ready`` of a protocol version this client does not speak."""
    if ready.protocol not in (pb.PROTOCOL_UNSPECIFIED, pb.PROTOCOL_V1):
        raise RemoteExecutionError(
            f"the server speaks protocol version {ready.protocol}; this client speaks 1",
            code=grpc.StatusCode.FAILED_PRECONDITION)
