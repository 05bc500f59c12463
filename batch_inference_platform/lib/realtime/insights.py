"""Batch insights: each active customer's risk from the registered model (scored on their
latest validated features in the deployment the insights use), their window activity, and the
next best action.

Realtime events are keyed by ``customer_id``; the deployment's single key column (``key``)
holds the same customer ids in its validated table."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.lake.tables import DeltaLocation, snapshot
from batch_inference_platform.lib.realtime.actions import next_best_action
from batch_inference_platform.lib.realtime.aggregates import ACTIVITY
from batch_inference_platform.lib.realtime.events import InsightMessage
from batch_inference_platform.lib.realtime.tables import (
    WINDOW_COLUMN,
    read_windows,
    window_id,
    window_start_of,
)
from batch_inference_platform.lib.scoring.kernel import Scorer

_UTC = pa.timestamp("us", tz="UTC")
INSIGHTS_SCHEMA = pa.schema(
    [
        pa.field(WINDOW_COLUMN, pa.string(), nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("window_start", _UTC, nullable=False),
        pa.field("window_end", _UTC, nullable=False),
        pa.field("risk_score", pa.float64()),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),
        pa.field("next_best_action", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("activity", pa.string(), nullable=False),
        pa.field("generated_at", _UTC, nullable=False),
    ]
)


def risk_scores(
    scorer: Scorer,
    validated: DeltaLocation,
    partitioning: Partitioning,
    customers: list[int],
    *,
    key: str,
) -> dict[int, float]:
    """The serving model's probability for each customer's row in the latest validated
    partition, the customer found in column ``key`` (customers without one get no score)."""
    if not customers or not validated.exists():
        return {}
    source = snapshot(validated, partitioning)
    partitions = sorted(source.partitions())
    if not partitions:
        return {}
    wanted = ds.field(key).isin(customers)
    inputs = [name for name in scorer.inputs.present(source.schema) if name != key]
    batches = [b.filter(wanted) for b in source.batches(partitions[-1], columns=[key, *inputs])]
    rows = pa.Table.from_batches(
        [b for b in batches if b.num_rows], schema=batches[0].schema if batches else None
    )
    if rows.num_rows == 0:
        return {}
    batch = rows.combine_chunks().to_batches()[0]
    scores = np.asarray(scorer.predict(scorer.inputs.prepare(batch)), np.float64)
    keys = batch.column(key).to_pylist()
    return {int(k): float(v) for k, v in zip(keys, scores.tolist(), strict=True) if k is not None}


def build_insights(
    aggregates: pa.Table,
    *,
    scorer: Scorer,
    validated: DeltaLocation,
    partitioning: Partitioning,
    key: str,
    generated_at: dt.datetime,
) -> list[InsightMessage]:
    """One insight per (window, customer) of ``aggregates``, with the risk ``scorer`` (a
    probability model) gives each customer: its row in ``validated`` (partitioned by
    ``partitioning``) whose ``key`` column holds the customer id."""
    rows = aggregates.to_pylist()
    customers = sorted({r["customer_id"] for r in rows})
    risks = risk_scores(scorer, validated, partitioning, customers, key=key)
    insights = []
    for row in rows:
        activity = {name: float(row[name]) for name in ACTIVITY}
        risk = risks.get(row["customer_id"])
        action, reason = next_best_action(activity, risk)
        insights.append(
            InsightMessage(
                customer_id=row["customer_id"],
                window_start=row["window_start"],
                window_end=row["window_end"],
                risk_score=risk,
                model_name=scorer.model_name,
                model_version=scorer.model_version,
                next_best_action=action,
                reason=reason,
                activity=activity,
                generated_at=generated_at,
            )
        )
    return insights


def insights_table(insights: list[InsightMessage]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                WINDOW_COLUMN: window_id(i.window_start),
                **i.model_dump(exclude={"schema_version", "activity"}),
                "activity": json.dumps(i.activity, sort_keys=True),
            }
            for i in insights
        ],
        schema=INSIGHTS_SCHEMA,
    )


def latest_per_customer(
    location: DeltaLocation, ttl: dt.timedelta, pending: Sequence[InsightMessage] = ()
) -> list[InsightMessage]:
    """Each customer's newest insight among windows ending within ``ttl`` of the newest, with
    ``pending`` (not yet committed) replacing the stored insights of their windows."""
    fresh = insights_table(list(pending)).to_pylist()
    replaced = {row[WINDOW_COLUMN] for row in fresh}
    stored: list[dict] = []
    if location.exists():
        # Only the windows that can still be within ``ttl`` are read, not the whole history.
        windows = sorted({p[WINDOW_COLUMN] for p in location.open().partitions()})
        newest = max([*windows[-1:], *replaced]) if windows or replaced else None
        if newest is not None:
            since = window_id(window_start_of(newest) - ttl)
            recent = [w for w in windows if w >= since and w not in replaced]
            stored = read_windows(location, recent).to_pylist()
    if not stored and not fresh:
        return []
    rows = sorted([*stored, *fresh], key=lambda r: (r["window_end"], r["generated_at"]))
    horizon = rows[-1]["window_end"] - ttl
    latest: dict[int, dict] = {}
    for row in rows:
        if row["window_end"] > horizon:
            latest[row["customer_id"]] = row
    return [
        InsightMessage(
            **{k: v for k, v in row.items() if k not in (WINDOW_COLUMN, "activity")},
            activity=json.loads(row["activity"]),
        )
        for row in latest.values()
    ]
