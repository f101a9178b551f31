"""User-facing errors: one clear line naming the key, the value and the fix, exit code 2."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable

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


class TrainingInterrupted(Exception):
    """A run stopped early on purpose, after writing a checkpoint: SIGTERM/SIGINT (exit 128 +
    signal) or a non-finite loss under train.nan_policy=stop (exit 3)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class LaunchFailed(Exception):
    """A launched rank exited non-zero; its own error was already printed above."""

    def __init__(self, code: int):
        super().__init__(f"a rank failed with exit code {code}; see its error above")
        self.exit_code = code


def exit_code_for(error: BaseException) -> int | None:
    """Print the one-line message of an error ft expects and return its exit code; None for any
    other error (a bug: let its traceback show). The only place that maps errors to exit codes."""
    if isinstance(error, UserError):
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    if isinstance(error, TrainingInterrupted):
        print(f"stopped: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, LaunchFailed):
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    return None


def run_guarded(command: Callable[[], int]) -> int:
    """Run a command; an expected error becomes its message and exit code (no traceback)."""
    try:
        return command()
    except (UserError, TrainingInterrupted, LaunchFailed, KeyboardInterrupt) as error:
        code = exit_code_for(error)
        assert code is not None
        return code
