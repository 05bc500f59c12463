"""Per-customer activity in each window, engineered from the window's events."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

from batch_inference_platform.lib.realtime.tables import WINDOW_COLUMN, window_start_of

COUNTS = {
    "journey_events": ("kind", "journey"),
    "applications_started": ("step", "application_started"),
    "applications_submitted": ("step", "application_submitted"),
    "offers_viewed": ("step", "offer_viewed"),
    "support_contacts": ("step", "support_contact"),
    "transactions": ("kind", "transaction"),
    "declined_transactions": ("declined", True),
    "decisions_approved": ("decision", "approved"),
    "decisions_declined": ("decision", "declined"),
    "decisions_referred": ("decision", "referred"),
}
"""Each count: events whose ``column`` equals ``value``."""
ACTIVITY = [*COUNTS, "transaction_amount"]

AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field(WINDOW_COLUMN, pa.string(), nullable=False),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        *[pa.field(name, pa.int64(), nullable=False) for name in COUNTS],
        pa.field("transaction_amount", pa.float64(), nullable=False),
    ]
)


def aggregate(events: pa.Table, window: dt.timedelta) -> pa.Table:
    """One row per (window, customer) with the counts and the transaction amount."""
    if events.num_rows == 0:
        return AGGREGATES_SCHEMA.empty_table()
    frame = events.to_pandas()
    for name, (column, value) in COUNTS.items():
        frame[name] = (frame[column] == value).astype("int64")
    frame["transaction_amount"] = frame["amount"].fillna(0.0).astype("float64")
    grouped = pd.DataFrame(
        frame.groupby([WINDOW_COLUMN, "customer_id"], as_index=False)[ACTIVITY].sum()
    )
    starts = [window_start_of(w) for w in grouped[WINDOW_COLUMN]]
    grouped = grouped.assign(window_start=starts, window_end=[s + window for s in starts])
    table = pa.Table.from_pandas(grouped, schema=AGGREGATES_SCHEMA, preserve_index=False)
    return table.sort_by([(WINDOW_COLUMN, "ascending"), ("customer_id", "ascending")])
