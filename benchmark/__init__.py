"""Cross-modal hashing benchmark: evaluation, runner, records and reports.

Run ``python -m benchmark --help``. The methods live in the ``methods`` package and the data in the
``datasets`` package.
"""

__version__ = "0.1.0"
