"""The one error type that speaks to the user.

A `GosmallError` carries one paragraph: the file, key or reference at fault,
what is wrong, and how to fix it. `tasks` turns it into invoke's `Exit`, so
the user sees the message and a non-zero status, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Exit statuses, like grep and ruff: a check found something, or the command could not do its job.
FOUND = 1
COULD_NOT_RUN = 2


class GosmallError(Exception):
    """A mistake the user can fix; the message says how.

    `code` is the exit status: COULD_NOT_RUN (bad flag, config, input, toolchain, engine) unless a
    check that ran found something (FOUND: max_size exceeded, unpinned references).
    """

    def __init__(self, message: str, *, code: int = COULD_NOT_RUN) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def did_you_mean(word: str, choices: Iterable[object]) -> str:
    """' did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
