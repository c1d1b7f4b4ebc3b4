"""Client configuration: where the server is and how to talk to it.

:class:`RemoteExecutorConfig` is the seed API's configuration object. Its
fields, their order and their defaults are fixed; ``ca_file``,
``client_cert_file`` and ``client_key_file`` are optional additions for TLS.
Nothing here touches the network: the values are read by
:class:`remotemedia.remote.RemoteProxyClient`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["RemoteExecutorConfig"]

# The longest token the server takes (a line of its token file) and rmctl
# sends.
MAX_TOKEN_CHARS = 1024

# The longest timeout, in seconds (about 31 years): every bound the client
# and the server compute from it stays in range.
MAX_TIMEOUT = 1e9


def _is_number(value: object) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class RemoteExecutorConfig:
    """Configuration for remote execution of objects.

    How each field shows on the wire:

    - ``host``/``port``: the gRPC target ``host:port`` of ``remotemediad``.
    - ``protocol``: only ``"grpc"`` (gRPC over HTTP/2) exists.
    - ``auth_token``: sent as ``authorization: Bearer <token>`` metadata on
      every RPC: printable ASCII, at most 1024 characters.
    - ``timeout``: seconds, at most 1e9. Bounds each call and each
      generator ``Pull`` (sent as ``timeout_ms`` and enforced locally too),
      and the wait for ``Ready`` at ``create_proxy``, where every
      ``Progress`` message restarts the clock.
    - ``max_retries``: how many times a session open is retried when the
      server cannot be reached (UNAVAILABLE before ``Ready``): 1 + N
      attempts with jittered exponential backoff, all within ``timeout``.
      Method calls are never re-sent.
    - ``ssl_enabled``: TLS instead of cleartext HTTP/2 (h2c). The server is
      verified against ``ca_file``, or the system CA bundle.
    - ``pip_packages``: PEP 508 requirement strings, sent as
      ``Open.requirements``; the server builds the environment before
      ``Ready``.
    - ``ca_file``, ``client_cert_file``, ``client_key_file``: PEM files for
      TLS; the client certificate and key go together.

    ``auth_token`` is left out of ``repr()`` so that it does not end up in
    logs.

    Raises:
        ValueError: a field has a value the client cannot use.
        TypeError: a field has the wrong type.
    """

    host: str = "localhost"
    port: int = 50052
    protocol: str = "grpc"
    auth_token: Optional[str] = field(default=None, repr=False)
    timeout: float = 30.0
    max_retries: int = 3
    ssl_enabled: bool = False
    pip_packages: Optional[List[str]] = None
    ca_file: Optional[PathLike] = None
    client_cert_file: Optional[PathLike] = None
    client_key_file: Optional[PathLike] = None

    def __post_init__(self) -> None:
        """Validate every field; see the class docstring."""
        self._check_target()
        self._check_limits()
        self._check_packages()
        self._check_tls()

    def _check_target(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host must be a non-empty string")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError(f"port must be an int, not {type(self.port).__name__}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, not {self.port}")
        if self.protocol != "grpc":
            raise ValueError(
                f"unsupported protocol {self.protocol!r}: only 'grpc' is supported")
        if self.auth_token is not None:
            self._check_token(self.auth_token)

    @staticmethod
    def _check_token(token: object) -> None:
        """A token that can travel in an HTTP/2 header, and that the server
        can hold. Its value is never quoted: it is a secret."""
        if not isinstance(token, str):
            raise TypeError("auth_token must be a string or None")
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError(f"auth_token is {len(token)} characters long: the "
                             f"server takes tokens of at most {MAX_TOKEN_CHARS}")
        for i, c in enumerate(token):
            if not " " <= c <= "~":
                raise ValueError(
                    f"auth_token has {ascii(c)} at index {i}: a token is printable "
                    "ASCII, as it travels in an HTTP header")

    def _check_limits(self) -> None:
        if not _is_number(self.timeout):
            raise TypeError(
                f"timeout must be a number of seconds, not {type(self.timeout).__name__}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, not {self.timeout}")
        if not math.isfinite(self.timeout) or self.timeout > MAX_TIMEOUT:
            raise ValueError(f"timeout must be at most {MAX_TIMEOUT:,.0f} seconds, "
                             f"not {self.timeout}")
        self.timeout = float(self.timeout)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(
                f"max_retries must be an int, not {type(self.max_retries).__name__}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")

    def _check_packages(self) -> None:
        packages = self.pip_packages
        if packages is None:
            return
        if isinstance(packages, (str, bytes)):
            raise TypeError(
                "pip_packages must be a list of strings, not a single string: "
                f"use [{packages!r}]")
        if not isinstance(packages, (list, tuple)):
            raise TypeError(
                f"pip_packages must be a list of strings or None, not {type(packages).__name__}")
        for requirement in packages:
            if not isinstance(requirement, str):
                raise TypeError(
                    "pip_packages must contain only strings, found "
                    f"{type(requirement).__name__}: {requirement!r}")
            try:
                requirement.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"pip_packages entry {requirement!r} is not valid text: "
                    f"{exc.reason} at index {exc.start}") from None
        self.pip_packages = list(packages)

    def _check_tls(self) -> None:
        if not isinstance(self.ssl_enabled, bool):
            # A string such as "false" would be true, and turn TLS on.
            raise TypeError(
                f"ssl_enabled must be True or False, not {type(self.ssl_enabled).__name__}")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file must be given together")
        tls_files = (self.ca_file, self.client_cert_file, self.client_key_file)
        if not self.ssl_enabled and any(f is not None for f in tls_files):
            raise ValueError(
                "ca_file, client_cert_file and client_key_file need ssl_enabled=True")

    @property
    def target(self) -> str:
        """The gRPC target string, ``host:port`` (IPv6 hosts in brackets)."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"
