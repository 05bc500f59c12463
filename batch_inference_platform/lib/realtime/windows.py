"""Tumbling windows over event time, and which events are too late for theirs.

An event belongs to the window ``[start, start + length)`` holding its ``occurred_at``. The
watermark is the latest event time seen so far; a window stays open until the watermark passes
its end by the grace period. An event whose window has closed is too late: it is counted and
reported, never silently merged into a window whose insights were already published.
"""

from __future__ import annotations

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def window_start(moment: dt.datetime, length: dt.timedelta) -> dt.datetime:
    """The start of the tumbling window of ``length`` holding ``moment``."""
    periods = (moment - EPOCH) // length
    return EPOCH + periods * length


def is_too_late(
    moment: dt.datetime, watermark: dt.datetime | None, length: dt.timedelta, grace: dt.timedelta
) -> bool:
    """Whether an event at ``moment`` arrives after its window closed (end + grace)."""
    if watermark is None:
        return False
    return window_start(moment, length) + length + grace <= watermark
