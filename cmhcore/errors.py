"""Errors shared by every package of the suite.

Bad input must fail fast with one line that names the input and says what would be valid; the
CLI prints ``str(err)`` alone (no traceback) and exits with status 2 for these.
"""


class InputError(ValueError):
    """A user-supplied input (array, file, name, option) is invalid. The message is one line."""

    def __init__(self, message: str):
        # One line, always: newlines would break the CLI's one-line contract.
        super().__init__(" ".join(str(message).split()))


class DataFileError(InputError):
    """A data file is missing, corrupt or in the wrong format."""
