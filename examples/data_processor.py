#!/usr/bin/python3
"""The seed's DataProcessor, run remotely.

numpy is requested with pip_packages; on a server with
--pip-system-site-packages on (the default) the host's Debian numpy
satisfies it, so nothing is downloaded.

Usage: data_processor.py [HOST [PORT]]   (default localhost 50052)
"""
import asyncio
import sys

from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient


class DataProcessor:
    def __init__(self):
        self.cache = {}

    def process(self, data):
        import numpy as np  # imported on the server, inside the session

        result = float(np.mean(data))
        self.cache[tuple(data)] = result
        return result

    def cached(self):
        return len(self.cache)


async def main(host: str, port: int) -> None:
    config = RemoteExecutorConfig(host=host, port=port, pip_packages=["numpy"])
    async with RemoteProxyClient(config) as client:
        processor = DataProcessor()
        remote_processor = await client.create_proxy(processor)
        result = await remote_processor.process([1, 2, 3, 4, 5])
        print(f"mean of [1, 2, 3, 4, 5] computed remotely: {result}")
        await remote_processor.process([10, 20])
        print(f"results cached on the server: {await remote_processor.cached()}")
        print(f"the cache attribute, read remotely: {await remote_processor.cache}")
        assert result == 3.0


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 50052
    asyncio.run(main(host, port))
