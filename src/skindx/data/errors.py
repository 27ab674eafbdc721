"""The data stages' own error: bad or missing input data, explained in one message.

Stage scripts run through `run_stage`, which prints the message (no traceback) and exits
non-zero, so DVC stops the pipeline there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class DataError(Exception):
    """Input data is missing, unreadable or invalid; the message says what and where."""


class SourceError(DataError):
    """The data source cannot be found or read."""


class DownloadError(DataError):
    """A download failed or did not match its expected size/checksum."""


class ValidationFailed(DataError):
    """A critical data expectation failed."""


def run_stage(main: Callable[[], object], stage: str) -> None:
    """Run a stage's `main`; a DataError becomes one readable message and exit status 1."""
    try:
        main()
    except DataError as exc:
        print(f"\n{stage}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{stage}: interrupted", file=sys.stderr)
        sys.exit(130)
