"""User-facing errors: one clear line naming the key, the value and the fix, exit code 2."""

from __future__ import annotations

import difflib
from typing import Iterable

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """An error the user caused and can fix (bad config, missing file, incompatible choices).

    The CLI prints ``str(error)`` as ``error: ...`` and exits with code 2, without a traceback.
    ``problems`` holds several messages when many things are wrong at once (all listed together).
    """

    def __init__(self, message: str, problems: Iterable[str] = ()):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem: keep it on one line
            message = f"{message} {self.problems[0]}"
        elif self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
