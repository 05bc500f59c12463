"""Quartz cron expressions (as Spring and the seed's application.yml write them) to the
five-field cron Dagster schedules run on; anything without a cron equivalent is refused.
The cron is checked here (values in range, a day that exists), with no Dagster internals."""

from __future__ import annotations

import re

_QUARTZ_FIELDS = ("seconds", "minutes", "hours", "day-of-month", "month", "day-of-week", "[year]")
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTHS = set(_MONTH_NAMES)
_DAYS = set(_DAY_NAMES)

_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),  # minute
    (0, 23, {}),  # hour
    (1, 31, {}),  # day of month
    (1, 12, {name: i for i, name in enumerate(_MONTH_NAMES, 1)}),  # month
    (0, 7, {name: i for i, name in enumerate(_DAY_NAMES)}),  # day of week (0 and 7: Sunday)
)
"""Per five-field cron field: lowest value, highest value, names it accepts."""
_CRON_ITEM = re.compile(r"^(?P<low>\*|\w+)(?:-(?P<high>\w+))?(?:/(?P<step>\d+))?$")
_FEBRUARY = 2


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
    if not _is_valid_cron(cron):
        raise _quartz_error(expr, f"converts to invalid cron {cron!r}")
    return cron


def _cron_value(token: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(token.upper()) if not token.isdigit() else int(token)
    if value is None or not low <= value <= high:
        raise ValueError(token)
    return value


def _cron_values(field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    """The values one cron field matches (``*``, values, ranges - wrapping too - and steps)."""
    values: set[int] = set()
    for item in field.split(","):
        match = _CRON_ITEM.match(item)
        if match is None:
            raise ValueError(item)
        step = int(match["step"] or 1)
        if step < 1:
            raise ValueError(item)
        if match["low"] == "*":
            if match["high"] is not None:
                raise ValueError(item)
            first, last = low, high
        else:
            first = _cron_value(match["low"], low, high, names)
            if match["high"] is not None:
                last = _cron_value(match["high"], low, high, names)
            else:  # 5/15 runs from 5 to the end of the field
                last = high if match["step"] is not None else first
        # a range past the end wraps around (FRI-MON); one from a value to itself (or 31/2) is
        # the whole cycle, as in the croniter Dagster schedules run on
        ranged = match["high"] is not None or match["step"] is not None
        span = (last - first) % (high - low + 1) or (high - low if ranged else 0)
        values.update(low + (first - low + i) % (high - low + 1) for i in range(0, span + 1, step))
    return values


def _is_valid_cron(cron: str) -> bool:
    """Whether ``cron`` is a five-field cron expression a schedule can run on (values in range,
    and not only on February 30 or 31)."""
    fields = cron.split()
    if len(fields) != len(_CRON_FIELDS):
        return False
    try:
        expanded = [_cron_values(f, *spec) for f, spec in zip(fields, _CRON_FIELDS, strict=True)]
    except ValueError:
        return False
    days, months = expanded[2], expanded[3]
    return not (months == {_FEBRUARY} and len(days) == 1 and days <= {30, 31})
