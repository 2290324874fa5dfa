"""Print the payload ``TriggerDevJobManager.trigger_remote`` sends, as the API receives it.

The manager talks to the repository's fake Trigger.dev server (tests/fake_triggerdev.py);
the Node tests hand the payload to the task's ``run`` exactly as the live worker would for
a run started through the API (plain JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from fake_triggerdev import FakeTriggerDev

from bgjobs.triggerdev import TriggerDevJobManager
from bgjobs.types import TriggerDevConfig


def main() -> None:
    job_id = sys.argv[1]
    with FakeTriggerDev() as fake:
        config = TriggerDevConfig(
            enabled=True, api_key=fake.api_key, api_url=fake.url, environment="production"
        )
        manager = TriggerDevJobManager(config, env={})
        try:
            manager.schedule_cron_job(job_id, job_id, lambda: None, "0 9 * * *", timezone="UTC")
            manager.sync(timeout=10)
            manager.trigger_remote(job_id)
        finally:
            manager.close()
        (run,) = fake.runs
        print(json.dumps(run["payload"]))


if __name__ == "__main__":
    main()
