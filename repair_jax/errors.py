"""The one error type a user sees: a one-line message, exit code 2 from the CLI."""

from __future__ import annotations

import functools
import numbers
import sys


class UserError(ValueError):
    """Bad input from the user (a file, a flag, an array). The CLI prints it on one line and exits 2."""


def require_at_least(name: str, value, least) -> None:
    """A number below its bound -> one clear :class:`UserError` naming it ("seeds must be >= 1, got 0"; the
    library names the config field, the CLI its flag)."""
    if value < least:
        raise UserError(f"{name} must be >= {least}, got {value}")


MAX_SEED = 2**32 - 1


def check_seed(name: str, value) -> int:
    """A seed must be a whole number in [0, 2**32 - 1] (what NumPy and ``jax.random.PRNGKey`` both
    accept unchanged) -> the int, else one clear :class:`UserError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be a whole number in [0, {MAX_SEED}], got {value!r}")
    if not 0 <= int(value) <= MAX_SEED:
        raise UserError(f"{name} must be in [0, {MAX_SEED}], got {value}")
    return int(value)


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
