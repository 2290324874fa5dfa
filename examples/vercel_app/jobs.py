"""The example's jobs: one registry that ``app.py`` serves and ``bgjobs vercel-json`` reads.

Both fit Vercel's Hobby plan (at most once a day each); on Hobby each fires somewhere within
the hour its cron names.
"""

from __future__ import annotations

import logging

from bgjobs import JobRegistry

logger = logging.getLogger(__name__)

jobs = JobRegistry()


@jobs.cron("daily-digest", "Daily digest", "0 9 * * *", timezone="UTC")
def daily_digest() -> None:
    """Stands in for real work (send a digest, refresh a cache); must end within the
    function's duration limit, since Vercel holds the request open while it runs."""
    logger.warning("daily-digest ran")


@jobs.cron("weekly-cleanup", "Weekly cleanup", "30 3 * * 0", timezone="UTC")
def weekly_cleanup() -> None:
    """Sundays, 03:30 UTC."""
    logger.warning("weekly-cleanup ran")
