"""The job cluster a scoring run asks for, and the smaller one it falls back to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from databricks.sdk.service import compute

CAPACITY_ERRORS = re.compile(
    r"QuotaExceeded|quota|INSUFFICIENT_INSTANCE_CAPACITY|SkuNotAvailable|"
    r"AllocationFailed|ZonalAllocationFailed|OverconstrainedAllocationRequest",
    re.IGNORECASE,
)
"""How Azure and Databricks word a cluster that could not get its VMs (quota or capacity)."""


@dataclass(frozen=True)
class ClusterSize:
    """Workers for one attempt: autoscaling between ``min_workers`` and ``workers``, or fixed."""

    workers: int
    min_workers: int
    autoscale: bool

    def smaller(self) -> ClusterSize | None:
        """Half the workers, not below the minimum; None when already at the minimum."""
        if self.workers <= self.min_workers:
            return None
        return replace(self, workers=max(self.min_workers, self.workers // 2))


@dataclass(frozen=True)
class ClusterTemplate:
    """Everything about the job cluster except its size (from application.yml)."""

    spark_version: str
    node_type: str
    spark_conf: dict[str, str] = field(default_factory=dict)
    log_destination: str = ""
    """DBFS folder the cluster delivers driver logs to (``dbfs:/...``); empty: none."""

    def spec(self, size: ClusterSize, env: dict[str, str]) -> compute.ClusterSpec:
        """A new-cluster spec of ``size`` with ``env`` in the Spark environment."""
        return compute.ClusterSpec(
            spark_version=self.spark_version,
            node_type_id=self.node_type,
            autoscale=(
                compute.AutoScale(min_workers=size.min_workers, max_workers=size.workers)
                if size.autoscale
                else None
            ),
            num_workers=None if size.autoscale else size.workers,
            spark_conf=dict(self.spark_conf) or None,
            spark_env_vars=dict(env) or None,
            cluster_log_conf=(
                compute.ClusterLogConf(
                    dbfs=compute.DbfsStorageInfo(destination=self.log_destination)
                )
                if self.log_destination
                else None
            ),
        )


def is_capacity_error(message: str) -> bool:
    """Whether a failed run's state message says the cluster could not get its VMs."""
    return bool(CAPACITY_ERRORS.search(message))
