"""``flask bgjobs ...``: the command line's commands on the app ``flask --app`` loads.

Flask adds this group to its ``flask`` command through the ``flask.commands`` entry point
(``setup.cfg``; :meth:`flask.cli.FlaskGroup._load_plugin_commands` loads every entry of that
group), so it exists without the extension registering anything: :mod:`bgjobs.flask`, which
every web worker imports, stays free of the command line and the local runtime::

    flask --app myapp bgjobs list                  # jobs, schedules, next fire times
    flask --app myapp bgjobs exec repository-sync  # run one job now, in the app context

Each command is a row of :data:`bgjobs.cli.COMMANDS` and runs through
:func:`bgjobs.cli.invoke` on the current app (``--help``, arguments, messages and exit
statuses are those of ``bgjobs COMMAND APP``); click only routes. An app without the
BGJobs extension gets the command line's one-line ``bgjobs: error: ...`` and exit status 2.

Flask loads plugin commands for every ``flask`` invocation (``flask run`` too), so this
module imports :mod:`bgjobs.cli` only once a ``bgjobs`` command is listed or looked up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple, cast

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

if TYPE_CHECKING:
    from flask import Flask

    from ..cli import Command

__all__ = ["BGJobsCommands", "command_group"]


class BGJobsCommands(AppGroup):
    """The ``bgjobs`` group: builds a command per row of :data:`bgjobs.cli.COMMANDS`
    when click asks for it, each running inside the app's context."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return [command.name for command in _commands()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        for command in _commands():
            if command.name == cmd_name:
                return _click_command(command)
        return None


def _commands() -> Tuple[Command, ...]:
    from ..cli import COMMANDS  # here, not at import: see the module doc

    return COMMANDS


def _click_command(command: Command) -> click.Command:
    """``command`` as a click command that hands its arguments to its argparse parser."""

    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def forward(ctx: click.Context, argv: Tuple[str, ...]) -> None:
        from ..cli import invoke
        from .apps import from_flask_app

        app = cast("Flask", current_app._get_current_object())  # type: ignore[attr-defined]
        ctx.exit(invoke(command, argv, lambda: from_flask_app(app), prog=ctx.command_path))

    # with_appcontext loads the app (flask --app) and pushes its context, as AppGroup.command
    # does for the commands declared on a group.
    return click.command(
        command.name,
        help=command.describe(),
        short_help=command.help,
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
    )(with_appcontext(forward))


command_group = BGJobsCommands(
    "bgjobs", help="Run, inspect and dispatch this app's bgjobs jobs (APP: this app)."
)
"""The object the ``flask.commands`` entry point ``bgjobs`` names."""
