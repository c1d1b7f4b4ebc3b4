"""The remotemedia client: proxies for objects that run on a remote server.

::

    from remotemedia.core.node import RemoteExecutorConfig
    from remotemedia.remote import RemoteProxyClient

    async with RemoteProxyClient(RemoteExecutorConfig(port=50052)) as client:
        remote = await client.create_proxy(obj)
        result = await remote.method(1, b=2)
        async for item in remote.generator(10):
            ...

Submodules: ``client`` (channel, session open and retries), ``session``
(one stream: reader and writer tasks, dispatch by call id), ``proxy``
(RemoteProxy, pending calls, remote generators), ``wire`` (message
encoding, chunking), ``errors`` (exceptions from ``Error`` messages and
statuses). The exceptions are those of :mod:`remotemedia.core.exceptions`.
"""

from __future__ import annotations

from remotemedia.core import exceptions as _exceptions
from remotemedia.core.exceptions import *
from remotemedia.remote.client import RemoteProxyClient
from remotemedia.remote.proxy import PendingCall, RemoteGenerator, RemoteProxy

__all__ = ["RemoteProxyClient", "RemoteProxy", "RemoteGenerator", "PendingCall"]
__all__ += _exceptions.__all__  # every exception class
