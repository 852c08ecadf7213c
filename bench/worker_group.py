"""Several worker processes of one app id, run as one contender (b) to use more than one core.

The bench starts this module in a process group of its own and stops the
group with SIGTERM, which reaches every worker. Each worker gets one port of
``BENCH_WORKER_WEB_PORTS`` (comma-separated) and a folder of its own under
``ADOPTION_DATA_DIR``. This process waits for all of them and exits with the
first failing status, or 0.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ports = [port.strip() for port in os.environ["BENCH_WORKER_WEB_PORTS"].split(",")]
    data_dir = Path(os.environ["ADOPTION_DATA_DIR"])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env={**os.environ, "ADOPTION_WEB_PORT": port,
                 "ADOPTION_DATA_DIR": str(data_dir / f"worker-{number}")},
        )
        for number, port in enumerate(ports)
    ]
    # The workers got the group's SIGTERM too; wait for them to stop. A Python
    # handler, unlike SIG_IGN, is not inherited by the workers started above.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    codes = [worker.wait() for worker in workers]
    return next((code for code in codes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
