"""A process with a 0.2 s interval job, to be paused (SIGSTOP) and resumed by a test.

Prints ``run <skips so far>`` after each run; logs bgjobs at INFO to stderr. Exits after
20 s at most.
"""

import logging
import sys
import time

from bgjobs import LocalJobManager

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
manager = LocalJobManager(env={"BGJOBS_STATE_DIR": ""}, max_workers=2)


def beat() -> None:
    status = manager.get_job_status("beat")
    print("run", status.skips if status is not None else -1, flush=True)


manager.schedule_job("beat", "Beat", beat, 0.2)
time.sleep(20)
manager.shutdown(timeout=5)
