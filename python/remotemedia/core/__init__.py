"""Configuration and exception types of the remotemedia client.

This package imports neither gRPC nor protobuf.
"""

from __future__ import annotations

from remotemedia.core.exceptions import (
    AuthenticationError,
    ConnectionLostError,
    InstallError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    SessionClosedError,
    WorkerDiedError,
)
from remotemedia.core.node import RemoteExecutorConfig

__all__ = [
    "RemoteExecutorConfig",
    "RemoteMediaError",
    "RemoteExecutionError",
    "InstallError",
    "AuthenticationError",
    "RemoteTimeoutError",
    "WorkerDiedError",
    "ConnectionLostError",
    "SessionClosedError",
]
