"""Vercel's entrypoint: its Python runtime serves the top-level WSGI ``app`` of ``app.py``.

Every path goes to ``app``: Vercel Cron calls ``GET /api/cron/<job id>`` (the ``crons`` of
``vercel.json``, printed by ``bgjobs vercel-json jobs.py --plan hobby``) with
``Authorization: Bearer $CRON_SECRET``; ``/api/cron/status`` and the page at ``/api/cron/``
answer with the same secret. On Vercel (``VERCEL=1``) the ``vercel`` runtime is chosen: no
timers, a job runs inside the request that dispatches it.
"""

from __future__ import annotations

from jobs import jobs

from bgjobs import initialize_background_jobs
from bgjobs.wsgi import create_app

manager = initialize_background_jobs(jobs)
app = create_app(manager)
