"""The one error type a user sees: a one-line message, exit code 2 from the CLI."""


class UserError(ValueError):
    """Bad input from the user (a file, a flag, an array). The CLI prints it on one line and exits 2."""
