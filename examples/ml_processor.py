#!/usr/bin/python3
"""The seed's MLProcessor: scikit-learn in the session.

Usage: ml_processor.py [HOST [PORT]]   (default localhost 50052)
"""
import asyncio
import sys

from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient


class MLProcessor:
    def train_model(self, X, y):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import cross_val_score

        model = RandomForestClassifier(n_estimators=100, random_state=0)
        scores = cross_val_score(model, X, y, cv=5)
        model.fit(X, y)
        return {
            "cv_scores": scores.tolist(),
            "mean_score": float(scores.mean()),
            "model_params": model.get_params(),
        }


async def main(host: str, port: int) -> None:
    config = RemoteExecutorConfig(host=host, port=port, timeout=120.0,
                                  pip_packages=["scikit-learn", "numpy", "pandas", "joblib"])
    async with RemoteProxyClient(config) as client:
        ml = await client.create_proxy(MLProcessor())
        X = [[i % 5, (i * 7) % 11, i % 3] for i in range(100)]
        y = [int(row[0] + row[2] > 3) for row in X]
        result = await ml.train_model(X, y)
        print(f"cross-validation scores: {result['cv_scores']}")
        print(f"mean score: {result['mean_score']:.3f}")
        assert result["mean_score"] > 0.8


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 50052
    asyncio.run(main(host, port))
