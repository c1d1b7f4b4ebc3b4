"""remotemedia: run live Python objects in sandboxed workers on a remote server.

The client side is :class:`remotemedia.remote.RemoteProxyClient`, configured
with :class:`remotemedia.core.node.RemoteExecutorConfig`::

    from remotemedia.core.node import RemoteExecutorConfig
    from remotemedia.remote import RemoteProxyClient

    async with RemoteProxyClient(RemoteExecutorConfig(port=50052)) as client:
        remote = await client.create_proxy(obj)
        await remote.method(1, b=2)

The names below are imported lazily, so that ``import remotemedia`` (which
the worker side may do) does not pull in gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it. The exceptions are those of
# remotemedia.core.exceptions.__all__, named here so that nothing is imported
# before a name is used (tests/client check that the two agree).
_EXPORTS = {
    "RemoteExecutorConfig": "remotemedia.core.node",
    "RemoteMediaError": "remotemedia.core.exceptions",
    "RemoteExecutionError": "remotemedia.core.exceptions",
    "InstallError": "remotemedia.core.exceptions",
    "AuthenticationError": "remotemedia.core.exceptions",
    "RemoteTimeoutError": "remotemedia.core.exceptions",
    "WorkerDiedError": "remotemedia.core.exceptions",
    "ConnectionLostError": "remotemedia.core.exceptions",
    "SessionClosedError": "remotemedia.core.exceptions",
    "RemoteProxyClient": "remotemedia.remote.client",
    "RemoteProxy": "remotemedia.remote.proxy",
    "RemoteGenerator": "remotemedia.remote.proxy",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from remotemedia.core.exceptions import *
    from remotemedia.core.node import RemoteExecutorConfig
    from remotemedia.remote.client import RemoteProxyClient
    from remotemedia.remote.proxy import RemoteGenerator, RemoteProxy


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'remotemedia' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
