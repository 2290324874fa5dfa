"""A small Flask app whose background jobs (``jobs.py``) run on bgjobs.

::

    flask --app examples/flask_app/app.py run
    flask --app examples/flask_app/app.py bgjobs exec repository-sync
    python -m bgjobs exec examples/flask_app/app.py:create_app repository-sync

``BGJobs`` picks the runtime from the configuration (locally: timers in this process),
runs each job inside the app context, and mounts the job endpoints: ``/api/cron/`` (an HTML
status page), ``/api/cron/status`` (JSON) and ``POST /api/cron/<job id>`` (run a job now).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from flask import Blueprint, Flask, current_app, render_template_string

from bgjobs.flask import BGJobs, get_manager

from . import db
from .jobs import jobs

background = BGJobs(registry=jobs)
site = Blueprint("site", __name__)


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """The app. Settings: the defaults, then ``FLASK_*`` environment variables
    (``FLASK_DATABASE=/tmp/x.sqlite3``), then ``config``."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        DATABASE=os.path.join(app.instance_path, "example.sqlite3"),
        CONTENT_DIR=str(Path(__file__).with_name("content")),
    )
    app.config.from_prefixed_env()  # FLASK_DATABASE, FLASK_CONTENT_DIR, FLASK_BGJOBS_SECRET...
    if config is not None:
        app.config.update(config)
    db.init_db(app.config["DATABASE"], seed=True)
    app.register_blueprint(site)
    background.init_app(app)  # after the config: BGJobs reads BGJOBS_* from it
    return app


_LAYOUT = """<!doctype html>
<meta charset="utf-8">
<title>{{ title }} · bgjobs example</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 2rem; }
  th, td { text-align: left; padding: .25rem .75rem .25rem 0; border-bottom: 1px solid #ddd; }
  .failed { color: #b00; } .expired { color: #888; }
</style>
<nav><a href="/">Documents</a> · <a href="/subscriptions">Subscriptions</a>
  · <a href="/api/cron/">Job status page</a></nav>
<h1>{{ title }}</h1>
"""

_INDEX = (
    _LAYOUT
    + """
<h2>Background jobs</h2>
<table>
  <tr><th>Job</th><th>Schedule</th><th>Status</th><th>Last run (UTC)</th><th>Runs</th></tr>
  {% for job in statuses %}
  <tr><td>{{ job.id }}</td><td>{{ job.schedule }}</td>
      <td class="{{ job.status }}">{{ job.status }} {{ job.error or "" }}</td>
      <td>{{ job.last_run.strftime("%Y-%m-%d %H:%M:%S") if job.last_run else "never" }}</td>
      <td>{{ job.runs }}</td></tr>
  {% endfor %}
</table>
<h2>Documents</h2>
<p>Imported from the content folder by <code>repository-sync</code> every five minutes.</p>
<table>
  <tr><th>Title</th><th>File</th><th>Updated (UTC)</th></tr>
  {% for doc in documents %}
  <tr><td>{{ doc.title }}</td><td>{{ doc.path }}</td><td>{{ doc.updated_at }}</td></tr>
  {% else %}
  <tr><td colspan="3">None yet: the first sync runs five minutes after start-up,
      or now with <code>curl -X POST http://localhost:5000/api/cron/repository-sync</code>.</td></tr>
  {% endfor %}
</table>
"""
)

_SUBSCRIPTIONS = (
    _LAYOUT
    + """
<table>
  <tr><th>Email</th><th>Plan</th><th>Status</th><th>Period ends (UTC)</th></tr>
  {% for sub in subscriptions %}
  <tr class="{{ sub.status }}"><td>{{ sub.email }}</td><td>{{ sub.plan }}</td>
      <td>{{ sub.status }}</td><td>{{ sub.expires_at }}</td></tr>
  {% endfor %}
</table>
<h2>Outbox</h2>
<p>Written by <code>subscription-renewal-reminder</code> (daily, 09:00 UTC): one reminder per
subscription and period, however often the job runs.</p>
<table>
  <tr><th>To</th><th>Subject</th><th>Queued (UTC)</th></tr>
  {% for mail in outbox %}
  <tr><td>{{ mail.recipient }}</td><td>{{ mail.subject }}</td><td>{{ mail.created_at }}</td></tr>
  {% else %}
  <tr><td colspan="3">Empty.</td></tr>
  {% endfor %}
</table>
"""
)


@site.get("/")
def index() -> str:
    with db.connect(current_app.config["DATABASE"]) as conn:
        documents = conn.execute("SELECT * FROM documents ORDER BY path").fetchall()
    return render_template_string(
        _INDEX,
        title="Documents",
        documents=documents,
        statuses=get_manager().get_all_job_statuses(),
    )


@site.get("/subscriptions")
def subscriptions() -> str:
    with db.connect(current_app.config["DATABASE"]) as conn:
        subs = conn.execute("SELECT * FROM subscriptions ORDER BY expires_at").fetchall()
        outbox = conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    return render_template_string(
        _SUBSCRIPTIONS, title="Subscriptions", subscriptions=subs, outbox=outbox
    )
