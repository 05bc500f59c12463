"""Lake errors that name what to blame, and error text fit for a run's report.

A report line is one readable sentence: no traceback, no ANSI colour codes, no wrapper noise
(delta-rs and Spark embed whole Python tracebacks in their messages).
"""

from __future__ import annotations

import re

MAX_SUMMARY = 600
"""Characters kept of an error's text in a report (the head says what happened)."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_TRACEBACK = "Traceback (most recent call last):"
_FRAME = re.compile(r"^\s+(File \"|\^|~|\.\.\.)|^\s{4,}\S")
_NOISE = (
    "An exception was thrown from the Python worker. Please see the stack trace below.",
    "Detail: Python exception:",
)


class UnreadableDataError(OSError):
    """A data file of a partition cannot be read as stored: truncated, overwritten (its pages
    fail their checksums), or holding values the table's schema does not allow."""

    def __init__(self, key: str | None, file: str, reason: str) -> None:
        self.key = key
        """The partition's key (None: a read of the whole table)."""
        self.file = file
        self.reason = reason
        where = f"{key}: {file}" if key is not None else file
        super().__init__(f"{where}: {reason}")


class ConcurrentWriteError(RuntimeError):
    """Another writer committed the same partition while this write was in flight; nothing of
    this write was committed and rerunning it is safe."""


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return _ANSI.sub("", text)


def error_summary(error: BaseException | str, limit: int = MAX_SUMMARY) -> str:
    """One line saying what went wrong: ``Type: message`` of the innermost error that a
    traceback embedded in the text reports, without the traceback or colour codes."""
    if isinstance(error, BaseException):
        text = str(error)
        if not isinstance(error, UnreadableDataError) and not text.startswith(type(error).__name__):
            text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        text = error
    text = strip_ansi(text).replace("\r", "")
    for noise in _NOISE:
        text = text.replace(noise, " ")
    head, _, tail = text.partition(_TRACEBACK)
    if tail:
        last = _last_exception_line(tail)
        head = head.strip().rstrip(":.").strip()
        text = f"{head}: {last}" if head and last and last not in head else head or last
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _last_exception_line(traceback: str) -> str:
    """The exception line a traceback ends with (``pyarrow.lib.ArrowInvalid: ...``)."""
    lines = [line for line in traceback.splitlines() if line.strip()]
    message: list[str] = []
    for line in reversed(lines):
        if _FRAME.match(line):
            break
        message.append(line.strip())
    return " ".join(reversed(message))


def find_unreadable(error: BaseException | None) -> UnreadableDataError | None:
    """The ``UnreadableDataError`` behind ``error`` (itself, or what caused it), if any."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, UnreadableDataError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def describe_error(error: BaseException) -> tuple[str, list[str]]:
    """What a report says of ``error``: the reason, and the files to blame if known."""
    unreadable = find_unreadable(error)
    if unreadable is not None:
        return error_summary(unreadable.reason), [unreadable.file]
    return error_summary(error), []
