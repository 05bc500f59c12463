"""Job clusters: ``new_cluster`` validation, Azure quota failures and the Clusters 2.1 API."""

from __future__ import annotations

import random
import re
import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocol import Json, Params, Route, invalid_parameter, now_ms, str_param

CREATOR = "fake-user@example.com"

# Azure VM names: Standard_<series><size><features>[_v<version>], e.g. Standard_DS3_v2.
_AZURE_VM = re.compile(
    r"^Standard_(?P<series>[A-Z]+)(?P<size>\d+)(?P<features>[a-z]*)(?:_v(?P<version>\d+))?$"
)
# The D/DS v1-v2 sizes are not core counts (Standard_DS3_v2 has 4 vCPUs).
_DV2_CORES = {1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 11: 2, 12: 4, 13: 8, 14: 16, 15: 20}


def requested_workers(spec: Mapping[str, Any], field_name: str = "new_cluster") -> int:
    """Validate a ``new_cluster`` spec; return its workers (``num_workers`` or autoscale max)."""
    for required in ("spark_version", "node_type_id"):
        if not spec.get(required):
            raise invalid_parameter(f"Missing required field: {field_name}.{required}")
    has_fixed, autoscale = "num_workers" in spec, spec.get("autoscale")
    if has_fixed == (autoscale is not None):
        raise invalid_parameter(
            f"Exactly one of {field_name}.num_workers or {field_name}.autoscale must be set."
        )
    if has_fixed:
        return _count(spec["num_workers"], f"{field_name}.num_workers")
    if not isinstance(autoscale, Mapping):
        raise invalid_parameter(f"Invalid value for {field_name}.autoscale: expected an object")
    low = _count(autoscale.get("min_workers"), f"{field_name}.autoscale.min_workers")
    high = _count(autoscale.get("max_workers"), f"{field_name}.autoscale.max_workers")
    if low > high:
        raise invalid_parameter(
            f"Invalid value for {field_name}.autoscale: min_workers ({low}) must be less than "
            f"or equal to max_workers ({high})."
        )
    return high


def _count(value: object, name: str) -> int:
    if value is None:
        raise invalid_parameter(f"Missing required field: {name}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_parameter(f"Invalid value for {name}: {value!r} is not a worker count")
    return value


def node_cores(node_type_id: str) -> int:
    """vCPUs of an Azure node type, read from its name (4 when the name is not recognised)."""
    match = _AZURE_VM.match(node_type_id)
    if match is None:
        return 4
    size = int(match["size"])
    if match["series"] in ("D", "DS") and match["version"] in (None, "2"):
        return _DV2_CORES.get(size, 4)
    return size


def quota_family(node_type_id: str) -> str:
    """Azure's quota family name, e.g. ``standardDSv2Family`` for ``Standard_DS3_v2``."""
    match = _AZURE_VM.match(node_type_id)
    if match is None:
        return "Total Regional"
    version = f"v{match['version']}" if match["version"] else ""
    return f"standard{match['series']}{match['features'].upper()}{version}Family"


def azure_quota_error(node_type_id: str, workers: int, quota_workers: int, region: str) -> str:
    """Azure's QuotaExceeded message for a cluster of ``workers`` + 1 driver nodes."""
    cores = node_cores(node_type_id)
    required, limit = (workers + 1) * cores, (quota_workers + 1) * cores
    return (
        "Operation could not be completed as it results in exceeding approved "
        f"{quota_family(node_type_id)} Cores quota. Additional details - Deployment Model: "
        f"Resource Manager, Location: {region}, Current Limit: {limit}, Current Usage: 0, "
        f"Additional Required: {required}, (Minimum) New Limit Required: {required}. "
        "Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/"
        "Microsoft_Azure_Capacity/UsageAndQuota.ReactView by specifying parameters listed in "
        "the 'Details' section for deployment to succeed. Please read more about quota limits "
        "at https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests"
    )


def new_cluster_id() -> str:
    """A cluster id shaped like Databricks' (``MMDD-HHMMSS-xxxxxxxx``)."""
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    return f"{time.strftime('%m%d-%H%M%S')}-{suffix}"


@dataclass
class FakeCluster:
    """A job cluster: the submitted spec plus the state ``clusters/get`` reports."""

    cluster_id: str
    spec: dict[str, Any]
    cluster_name: str
    state: str = "PENDING"
    state_message: str = "Starting Spark"
    start_time: int = field(default_factory=now_ms)
    terminated_time: int | None = None
    termination_reason: Json | None = None
    events: list[Json] = field(default_factory=list)

    def record(self, event_type: str, details: Json) -> None:
        """Append a cluster event (``clusters/events``)."""
        self.events.append(
            {
                "cluster_id": self.cluster_id,
                "timestamp": now_ms(),
                "type": event_type,
                "details": details,
            }
        )

    def to_json(self) -> Json:
        """The ClusterDetails shape of ``clusters/get``."""
        body: Json = {
            **self.spec,
            "cluster_id": self.cluster_id,
            "cluster_name": self.cluster_name,
            "driver_node_type_id": self.spec.get("driver_node_type_id", self.spec["node_type_id"]),
            "spark_conf": self.spec.get("spark_conf", {}),
            "state": self.state,
            "state_message": self.state_message,
            "start_time": self.start_time,
            "cluster_source": "JOB",
            "creator_user_name": CREATOR,
            "default_tags": {
                "Vendor": "Databricks",
                "Creator": CREATOR,
                "ClusterName": self.cluster_name,
                "ClusterId": self.cluster_id,
            },
        }
        if self.terminated_time is not None:
            body["terminated_time"] = self.terminated_time
        if self.termination_reason is not None:
            body["termination_reason"] = self.termination_reason
        return body


class ClustersService:
    """``clusters/get`` and ``clusters/events`` over the job clusters the jobs service creates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clusters: dict[str, FakeCluster] = {}

    def routes(self) -> dict[tuple[str, str], Route]:
        """The HTTP routes of this service (2.0 and 2.1 paths), keyed by (method, path)."""
        table: dict[tuple[str, str], Route] = {}
        for version in ("2.0", "2.1"):
            table["GET", f"/api/{version}/clusters/get"] = self.get
            table["POST", f"/api/{version}/clusters/events"] = self.events
        return table

    def add(self, cluster: FakeCluster) -> None:
        """Register a newly created job cluster (event CREATING)."""
        with self._lock:
            self._clusters[cluster.cluster_id] = cluster
            cluster.record("CREATING", {"user": CREATOR})

    def update(
        self,
        cluster: FakeCluster,
        state: str,
        message: str = "",
        *,
        event: str | None = None,
        details: Json | None = None,
    ) -> None:
        """Move a cluster to ``state``, recording ``event`` (with ``details``) if given."""
        details = details or {}
        with self._lock:
            cluster.state, cluster.state_message = state, message
            if state == "TERMINATED":
                cluster.terminated_time = now_ms()
                cluster.termination_reason = details.get("reason")
            if event is not None:
                cluster.record(event, details)

    def _cluster(self, params: Params) -> FakeCluster:
        cluster_id = str_param(params, "cluster_id")
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            # Real answer; the SDK maps it to ResourceDoesNotExist.
            raise invalid_parameter(f"Cluster {cluster_id} does not exist")
        return cluster

    def get(self, params: Params) -> Json:
        """GET clusters/get."""
        with self._lock:
            return self._cluster(params).to_json()

    def events(self, params: Params) -> Json:
        """POST clusters/events: newest first unless ``order`` is ASC; optional type filter."""
        with self._lock:
            events = list(self._cluster(params).events)
        wanted = params.get("event_types")
        if wanted:
            events = [event for event in events if event["type"] in wanted]
        if params.get("order", "DESC") == "DESC":
            events.reverse()
        return {"events": events, "total_count": len(events)}
