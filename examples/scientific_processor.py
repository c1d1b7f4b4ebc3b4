#!/usr/bin/python3
"""The seed's ScientificProcessor: numpy, scipy and pandas in the session.

Usage: scientific_processor.py [HOST [PORT]]   (default localhost 50052)
"""
import asyncio
import sys

from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient


class ScientificProcessor:
    def analyze_data(self, data_points):
        import numpy as np  # noqa: F401
        import pandas as pd
        from scipy import stats

        df = pd.DataFrame(data_points)
        return {
            "mean": df.mean().to_dict(),
            "std": df.std().to_dict(),
            "correlation": df.corr().to_dict(),
            "normality_test": {
                col: float(stats.shapiro(df[col])[1]) for col in df.columns
            },
        }


async def main(host: str, port: int) -> None:
    config = RemoteExecutorConfig(host=host, port=port,
                                  pip_packages=["numpy", "scipy", "pandas", "matplotlib"])
    async with RemoteProxyClient(config) as client:
        sp = await client.create_proxy(ScientificProcessor())
        data = [{"x": float(i), "y": float(i * i % 7)} for i in range(20)]
        result = await sp.analyze_data(data)
        print(f"mean: {result['mean']}")
        print(f"normality p-values: {result['normality_test']}")
        assert abs(result["mean"]["x"] - 9.5) < 1e-9


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 50052
    asyncio.run(main(host, port))
