"""The Python client's own tests: no remotemediad, no worker. The client
package and tests/lib (clientlib's run()) on the import path."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))
sys.path.insert(0, str(HERE.parent / "lib"))
