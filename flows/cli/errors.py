"""Usage errors as one ``error:`` line, like every other error of the command line.

Typer prints a bad option or an unknown command as a usage block and a boxed
message over several lines. :class:`OneLineErrors` is the app's command group:
it lets Click run the command as usual and prints any error Click raises
itself (a usage error, an abort) as ``error: <message> (see: <command>
--help)``, with Click's exit code (2 for usage, 1 for an abort).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from typer import Abort

# Typer 0.29 carries its own copy of Click: the real click package's classes
# are other classes.
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

__all__ = ["OneLineErrors"]


def _exit_with(exc: ClickException | Abort) -> NoReturn:
    if isinstance(exc, NoArgsIsHelpError):
        exc.show()  # no command given: the help, as Typer prints it
        sys.exit(exc.exit_code)
    if isinstance(exc, Abort):
        message, code = "aborted", 1
    else:
        # Typer words a bad value as pydantic does ("Value error, ..."); users
        # need only what follows.
        text = exc.format_message().replace("Value error, ", "")
        message, code = " ".join(text.split()), exc.exit_code
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f" (see: {ctx.command_path} --help)"
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


class OneLineErrors(TyperGroup):
    """The ``rungflow`` group: Click's own errors as one ``error:`` line."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            # Not standalone: Click raises its errors to us instead of printing
            # them, and hands back the exit code of a typer.Exit.
            result = super().main(args, prog_name, complete_var, False, **extra)
        except (ClickException, Abort) as exc:
            _exit_with(exc)
        sys.exit(result if isinstance(result, int) else 0)
