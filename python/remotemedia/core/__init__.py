"""Configuration and exception types of the remotemedia client.

This package imports neither gRPC nor protobuf.
"""

from __future__ import annotations

from remotemedia.core import exceptions
from remotemedia.core.exceptions import *
from remotemedia.core.node import RemoteExecutorConfig

__all__ = ["RemoteExecutorConfig"]
__all__ += exceptions.__all__  # every exception class
