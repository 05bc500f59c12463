"""Quartz cron expressions (as Spring and the seed's application.yml write them) to the
five-field cron Dagster schedules run on; anything without a cron equivalent is refused."""

from __future__ import annotations

import re

from dagster._utils.schedules import is_valid_cron_string

_QUARTZ_FIELDS = ("seconds", "minutes", "hours", "day-of-month", "month", "day-of-week", "[year]")
_MONTHS = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
_DAYS = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}


def _quartz_error(expr: str, reason: str) -> ValueError:
    return ValueError(f"Quartz schedule {expr!r}: {reason}")


def _check_tokens(expr: str, field: str, value: str) -> None:
    names = _MONTHS if field == "month" else _DAYS if field == "day-of-week" else set()
    for token in re.split(r"[,/-]", value.upper()):
        if token == "?" and field not in ("day-of-month", "day-of-week"):
            raise _quartz_error(expr, f"'?' is not allowed in the {field} field")
        if token in ("*", "?") or token.isdigit() or token in names:
            continue
        special = next((s for s in ("#", "LW", "L", "W") if s in token), None)
        if special is None:
            raise _quartz_error(expr, f"invalid {field} field {value!r}")
        reason = f"unsupported token {special!r} in {field} field {value!r} (no cron equivalent)"
        raise _quartz_error(expr, reason)


def _convert_day_of_week(expr: str, value: str) -> str:
    """Quartz day numbers 1-7 (SUN-SAT) -> cron 0-6, inside lists, ranges and steps too."""
    items = []
    for item in value.split(","):
        base, slash, step = item.partition("/")
        parts = []
        for part in base.split("-"):
            if part.isdigit():
                if not 1 <= int(part) <= 7:
                    raise _quartz_error(expr, f"day-of-week {part!r} is outside 1-7 (SUN-SAT)")
                part = str(int(part) - 1)
            parts.append("*" if part == "?" else part)
        items.append("-".join(parts) + slash + step)
    return ",".join(items)


def quartz_to_cron(expr: str) -> str:
    """Convert a Quartz expression (sec min hour dom month dow [year]) to 5-field cron."""
    fields = expr.split()
    if len(fields) not in (6, 7):
        raise _quartz_error(
            expr, f"expected 6 or 7 fields ({' '.join(_QUARTZ_FIELDS)}), got {len(fields)}"
        )
    seconds, minute, hour, dom, month, dow = fields[:6]
    if seconds not in ("0", "00"):
        reason = f"seconds field must be 0, got {seconds!r} (Dagster schedules are per minute)"
        raise _quartz_error(expr, reason)
    if len(fields) == 7 and fields[6] != "*":
        raise _quartz_error(expr, f"year field must be '*' or absent, got {fields[6]!r}")
    for name, value in zip(_QUARTZ_FIELDS[1:6], fields[1:6], strict=True):
        _check_tokens(expr, name, value)
    if dom not in ("?", "*") and dow not in ("?", "*"):
        raise _quartz_error(expr, "day-of-month and day-of-week are both specific; set one to '?'")
    dom = "*" if dom == "?" else dom
    cron = " ".join((minute, hour, dom, month, _convert_day_of_week(expr, dow)))
    if not is_valid_cron_string(cron):
        raise _quartz_error(expr, f"converts to invalid cron {cron!r}")
    return cron
