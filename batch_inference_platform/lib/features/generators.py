"""The demo sources a deployment's ``source.generator`` names: what ``make demo`` writes locally.

Each ``DemoSource`` generates a deployment's feature table (key, partition column, features and
the training label) deterministically - the same (seed, partition key, rows) gives the same
bytes - and trains the demo model that scores it. The partition column is the deployment's:
its ``Partitioning`` names the column and gives each row its value (a date for daily
partitions, the hour as a UTC timestamp for hourly ones, no column when unpartitioned).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.features import churn, synthetic
from batch_inference_platform.lib.features.contract import Column
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo
from batch_inference_platform.lib.registry.training import (
    TrainingParams,
    train_churn,
    train_credit_risk,
)
from batch_inference_platform.lib.scoring.outputs import OutputKind

DEFAULT_SEED = 7
DEFAULT_BATCH_ROWS = 65_536


class Trainer(Protocol):
    """Trains a demo model on rows its source generated and registers it under ``alias``;
    returns the version and whether it was newly trained (False: an identical one existed)."""

    def __call__(
        self,
        registry: ModelRegistry,
        *,
        model_name: str,
        alias: str,
        experiment: str,
        artifact_root: str,
        training_data: pa.Table,
        data_version: str,
        params: TrainingParams,
    ) -> tuple[ModelVersionInfo, bool]: ...


_Producer = Callable[..., Iterator[pa.RecordBatch]]
_Schema = Callable[[str | None, pa.DataType | None], pa.Schema]


@dataclass(frozen=True)
class DemoSource:
    """A demo feature source and its model."""

    name: str
    """The ``source.generator`` name in a ``defs.yaml``."""
    schema: pa.Schema
    """What it writes with its default daily partitioning (``partition_column`` by day);
    ``schema_for`` gives the schema for a deployment's own partitioning."""
    key: tuple[str, ...]
    """The columns that identify a row within a partition."""
    partition_column: str
    """The partition column's name in the demo's own ``defs.yaml``."""
    columns: tuple[Column, ...]
    """The feature columns with the types and ranges the demo's contract declares."""
    features: tuple[str, ...]
    """The model's inputs."""
    label: str
    """The training label column (not a feature; the source table carries it)."""
    output_kind: OutputKind
    classes: tuple[str, ...]
    """The label's classes (``positive_class`` of a probability output is the last)."""
    train: Trainer
    _produce: _Producer
    _schema: _Schema

    def schema_for(self, partitioning: Partitioning) -> pa.Schema:
        """The schema ``generate`` writes under ``partitioning``: key, partition column (none
        when unpartitioned), features, label."""
        return self._schema(partitioning.column, partitioning.arrow_type)

    def generate(
        self,
        partitioning: Partitioning,
        key: str,
        rows: int,
        seed: int = DEFAULT_SEED,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """Partition ``key`` as record batches of at most ``batch_rows`` (``schema_for``):
        every row holds ``partitioning.value(key)`` in ``partitioning.column``."""
        return self._produce(
            key,
            rows,
            seed=seed,
            partition_column=partitioning.column,
            partition=partitioning.scalar(key) if partitioning.partitioned else None,
            batch_rows=batch_rows,
        )


GENERATORS: dict[str, DemoSource] = {
    "credit_risk": DemoSource(
        name="credit_risk",
        schema=synthetic.raw_schema(),
        key=(synthetic.KEY_COLUMN,),
        partition_column=synthetic.DATE_COLUMN,
        columns=synthetic.CREDIT_COLUMNS,
        features=synthetic.CREDIT_FEATURES,
        label=synthetic.LABEL_COLUMN,
        output_kind=OutputKind.PROBABILITY,
        classes=("0", "1"),
        train=train_credit_risk,
        _produce=synthetic.generate,
        _schema=synthetic.raw_schema,
    ),
    "churn": DemoSource(
        name="churn",
        schema=churn.churn_raw_schema(),
        key=(churn.KEY_COLUMN,),
        partition_column=churn.SNAPSHOT_COLUMN,
        columns=churn.CHURN_COLUMNS,
        features=churn.CHURN_FEATURES,
        label=churn.LABEL_COLUMN,
        output_kind=OutputKind.CLASS_PROBABILITIES,
        classes=churn.CLASSES,
        train=train_churn,
        _produce=churn.generate_churn,
        _schema=churn.churn_raw_schema,
    ),
}
"""The demo sources by the ``source.generator`` names a ``defs.yaml`` may give."""


def demo_source(name: str) -> DemoSource:
    """The demo source ``name``, or a ValueError listing those there are."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(f"no demo generator {name!r} (there are {sorted(GENERATORS)})") from None
