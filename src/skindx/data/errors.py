"""The data stages' own error: bad or missing input data, explained in one message.

Stage scripts run through `skindx.cli.run_cli`, which prints the message (no traceback) and
exits non-zero, so DVC stops the pipeline there.
"""

from __future__ import annotations


class DataError(Exception):
    """Input data is missing, unreadable or invalid; the message says what and where."""


class SourceError(DataError):
    """The data source cannot be found or read."""


class DownloadError(DataError):
    """A download failed or did not match its expected size/checksum."""


class ValidationFailed(DataError):
    """A critical data expectation failed."""
