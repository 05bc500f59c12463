"""What every partitioned asset shares: its figures and check verdicts recorded per partition.

A run over a range of partitions (a single-run backfill) records one materialization per
partition; each carries that partition's own figures (``context.add_asset_metadata(...,
partition_key=...)``) beside what the run shares (table URI, column schema, model). Checks are
partitioned like their asset, and each partition gets its own evaluation with its numbers - the
UI shows every day's figures and verdicts as if the day had run alone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE

PARTITIONED_CHECK_WARNING = "Specifying a partitions_def on an AssetCheckSpec"
"""Dagster's preview warning for partitioned checks (suppressed: nothing a user can act on)."""


@dataclass(frozen=True)
class Verdict:
    """One check's outcome for one partition: passed, why, and the figures it judged."""

    passed: bool
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


def check_spec(
    name: str,
    asset: dg.AssetKey,
    description: str,
    partitions_def: dg.PartitionsDefinition | None,
    *,
    blocking: bool = False,
) -> dg.AssetCheckSpec:
    """A check partitioned like its asset (one verdict per partition), with its meaning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PARTITIONED_CHECK_WARNING)
        return dg.AssetCheckSpec(
            name,
            asset=asset,
            description=description,
            blocking=blocking,
            partitions_def=partitions_def,
        )


def per_partition_results(
    context: dg.AssetExecutionContext,
    *,
    metadata: Mapping[str, Any],
    partitions: Mapping[str, Mapping[str, Any]],
    verdicts: Mapping[str, Mapping[str, Verdict]],
    severity: Mapping[str, dg.AssetCheckSeverity] | None = None,
) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
    """The events of one run of a partitioned asset: one materialization per partition with
    ``metadata`` (the run's) and ``partitions[key]`` (the partition's own figures), then each
    check's verdict per partition (``verdicts[check][key]``). A partition without a verdict for a
    check is left unevaluated. An unpartitioned asset (key ``all``) gets one of each."""
    severity = severity or {}
    asset_key = context.asset_key
    selected = {k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key}
    if list(partitions) == [WHOLE_TABLE] or not context.assets_def.partitions_def:
        own = partitions.get(WHOLE_TABLE, {})
        yield dg.MaterializeResult(
            metadata={**metadata, **own},
            check_results=[
                _result(name, verdict, severity.get(name))
                for name, by_key in verdicts.items()
                if name in selected
                for verdict in by_key.values()
            ],
        )
        return
    for key, figures in partitions.items():
        context.add_asset_metadata(dict(figures), partition_key=key)
    yield dg.MaterializeResult(metadata=dict(metadata))
    specs = {
        spec.name: (output, spec)
        for output, spec in context.assets_def.check_specs_by_output_name.items()
        if spec.asset_key == asset_key and spec.name in selected
    }
    for output, _ in specs.values():  # every selected check ran (Dagster requires its output)
        yield dg.Output(None, output_name=output)
    targets = {key: _target(context, asset_key, key) for key in partitions}
    for name, by_key in verdicts.items():
        if name not in specs:
            continue
        spec = specs[name][1]
        for key, verdict in by_key.items():
            yield dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=name,
                passed=verdict.passed,
                metadata={"partition": key, **verdict.metadata},
                description=verdict.description,
                severity=severity.get(name, dg.AssetCheckSeverity.ERROR),
                blocking=spec.blocking,
                partition=key if spec.partitions_def is not None else None,
                target_materialization_data=targets.get(key),
            )


def _result(
    name: str, verdict: Verdict, severity: dg.AssetCheckSeverity | None
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=verdict.passed,
        description=verdict.description,
        metadata=dict(verdict.metadata),
        severity=severity or dg.AssetCheckSeverity.ERROR,
    )


def _target(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, key: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The materialization of ``key`` this run just recorded (what its verdicts judge)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
    ).records
    if not records or records[0].run_id != context.run_id:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


@dataclass
class Stopwatch:
    """Measures a step (or one partition of it)."""

    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def metadata(self, rows: int) -> dict[str, dg.MetadataValue]:
        """Rows, seconds and rows per second of the step so far."""
        seconds = self.seconds
        return {
            "dagster/row_count": dg.MetadataValue.int(rows),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "rows_per_second": dg.MetadataValue.float(round(rows / seconds, 1) if seconds else 0),
        }
