"""The command line's private parts: loading APP, what ``run`` shows, ``flask bgjobs``.

:mod:`bgjobs.cli` is the public command line; these modules serve it and are no API:

* :mod:`~bgjobs._cli.apps` — what APP names: a registry, or a Flask app and its jobs;
* :mod:`~bgjobs._cli.console` — ``run``'s live table or plain lines, the log format;
* :mod:`~bgjobs._cli.flask_commands` — the ``flask bgjobs`` group, which Flask loads through
  the ``flask.commands`` entry point, so that :mod:`bgjobs.flask` (imported by every web
  worker) never loads the command line.
"""
