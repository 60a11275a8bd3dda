"""The suite's errors, defined in :mod:`cmhcore.errors` (the bottom layer); kept here for imports of
``benchmark.errors``."""
from cmhcore.errors import DataFileError, InputError

__all__ = ["InputError", "DataFileError"]
