"""`liandong worker` with another consumer fetch wait, for the A/B that chose the worker's setting.

    python -m bench.worker_variant 1500     # the worker as faust configures it (1,500 ms)

Used by bench.latency --worker-fetch-wait-ms; the product code is not changed.
"""

from __future__ import annotations

import sys

from services.cli import main
from services.worker import app

if __name__ == "__main__":
    app.FETCH_MAX_WAIT_MS = int(sys.argv[1])
    sys.exit(main(["worker"]))
