"""The one error type a user sees: a one-line message, exit code 2 from the CLI."""

from __future__ import annotations

import functools
import sys


class UserError(ValueError):
    """Bad input from the user (a file, a flag, an array). The CLI prints it on one line and exits 2."""


def require_at_least(flag: str, value, least) -> None:
    """A command-line number below its bound -> one clear :class:`UserError` ("--seeds must be >= 1, got 0")."""
    if value < least:
        raise UserError(f"{flag} must be >= {least}, got {value}")


def exits_on_user_error(prog: str):
    """Decorator for a script's ``main(argv) -> int``: a :class:`UserError` becomes one line
    ``PROG: error: MESSAGE`` on stderr and the return value 2 (the scripts' exit code)."""
    def wrap(main):
        @functools.wraps(main)
        def checked(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except UserError as e:
                sys.stderr.write(f"{prog}: error: {e}\n")
                return 2
        return checked
    return wrap
