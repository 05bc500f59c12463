"""What a deployment's YAML cannot say for itself: its table, keys and contract fit the data
and the model. Checked when definitions load, so a bad ``defs.yaml`` never reaches a run."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlparse

import pyarrow as pa
from mlflow.exceptions import MlflowException

from batch_inference_platform.config import Settings
from batch_inference_platform.lib.deployments.partitioning import PartitionKind
from batch_inference_platform.lib.deployments.spec import Deployment, DeploymentSpec
from batch_inference_platform.lib.features.contract import Kind
from batch_inference_platform.lib.features.generators import GENERATORS
from batch_inference_platform.lib.lake.azure import storage_options
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import DeltaLocation, table_schema
from batch_inference_platform.lib.quartz import quartz_to_cron
from batch_inference_platform.lib.registry.client import ModelNotFoundError, ModelRegistry
from batch_inference_platform.lib.registry.compatibility import signature_inputs
from batch_inference_platform.lib.scoring.inputs import UnsupportedSignatureError
from batch_inference_platform.lib.scoring.outputs import OutputKind

log = logging.getLogger(__name__)


Locate = Callable[[str], str]
"""A dotted field of the YAML (``source.key``) -> where it is: ``file:line: attributes.<field>``."""


class DeploymentError(ValueError):
    """A ``defs.yaml`` that cannot work, naming the file, the line and the field."""

    def __init__(self, locate: Locate, field: str, message: str) -> None:
        super().__init__(f"{locate(field)}: {message}")


def check_deployment(
    deployment: Deployment, spec: DeploymentSpec, settings: Settings, source: Locate
) -> None:
    """Raise ``DeploymentError`` for the first field of ``spec`` the data contradicts."""
    app = settings.application
    engine = deployment.engine or app.engine
    if engine == "databricks" and not app.databricks.host:
        raise DeploymentError(
            source, "engine", "databricks needs batch-inference.databricks.host in application.yml"
        )
    if deployment.schedule is not None:
        try:
            quartz_to_cron(deployment.schedule)
        except ValueError as error:
            raise DeploymentError(source, "schedule", str(error)) from None
    schema = _source_schema(deployment, settings, source)
    _check_columns(deployment, spec, schema, source)
    _check_signature(deployment, spec, settings, source)


def _source_schema(deployment: Deployment, settings: Settings, source: Locate) -> pa.Schema:
    """The source table's schema: the demo generator's locally, else the Delta table's."""
    if deployment.generator and settings.application.environment == "local":
        return GENERATORS[deployment.generator].schema_for(deployment.partitioning)
    lake = settings.application.lake
    options = storage_options(lake.azure_auth, dict(lake.storage_options))  # type: ignore[arg-type]
    location = DeltaLocation(deployment.source_uri, options or None)
    try:
        if not location.exists():
            raise DeploymentError(
                source, "source.table", f"no Delta table at {deployment.source_uri}"
            )
        return table_schema(location)
    except DeploymentError:
        raise
    except Exception as error:  # unreadable log, missing credentials: say which table
        raise DeploymentError(
            source, "source.table", f"cannot read the Delta table at {location.uri}: {error}"
        ) from error


def _check_columns(
    deployment: Deployment, spec: DeploymentSpec, schema: pa.Schema, source: Locate
) -> None:
    names = schema.names
    shown = ", ".join(names)
    for name in deployment.key:
        if name not in names:
            raise DeploymentError(
                source, "source.key", f"column {name!r} is not in the table (columns: {shown})"
            )
        try:
            Kind.of_type(schema.field(name).type)
        except ValueError:
            raise DeploymentError(
                source,
                "source.key",
                f"column {name!r} is {schema.field(name).type}; a key column is an integer, "
                "string, date or float column",
            ) from None
    partitioning = deployment.partitioning
    if partitioning.column is not None:
        if partitioning.column not in names:
            raise DeploymentError(
                source,
                "source.partition.column",
                f"column {partitioning.column!r} is not in the table (columns: {shown})",
            )
        actual = schema.field(partitioning.column).type
        if not _fits(partitioning.kind, actual):
            kind = "a date" if partitioning.kind is PartitionKind.DAILY else "a UTC timestamp"
            raise DeploymentError(
                source,
                "source.partition.column",
                f"{partitioning.kind.value} partitions need {kind} column; "
                f"{partitioning.column!r} is {actual}",
            )
    if spec.contract is None:
        return
    for index, column in enumerate(spec.contract.columns):
        if column.name not in names:
            raise DeploymentError(
                source,
                f"contract.columns[{index}].name",
                f"column {column.name!r} is not in the table (columns: {shown})",
            )


def _fits(kind: PartitionKind, actual: pa.DataType) -> bool:
    """A daily partition column is a date; an hourly one a timestamp in UTC (the hour)."""
    if kind is PartitionKind.DAILY:
        return pa.types.is_date(actual)
    tz = getattr(actual, "tz", None)
    return pa.types.is_timestamp(actual) and tz in ("UTC", "utc", "+00:00", "Etc/UTC")


def _check_signature(
    deployment: Deployment, spec: DeploymentSpec, settings: Settings, source: Locate
) -> None:
    """Contract columns must be inputs of the model the alias names (when it is registered
    and the registry answers at once; otherwise model_versions checks it before scoring)."""
    if spec.contract is None:
        return
    mlflow = settings.application.mlflow
    registry_uri = mlflow.registry_uri or mlflow.tracking_uri
    if not _answers(registry_uri):
        log.warning(
            "%s: registry %s not reachable; contract not checked", source("model"), registry_uri
        )
        return
    registry = ModelRegistry(mlflow.tracking_uri, mlflow.registry_uri or None)
    try:
        with _quick_registry():
            holder = registry.by_alias(deployment.model_name, deployment.alias)
            inputs = signature_inputs(registry.signature(holder))
    except ModelNotFoundError as error:  # not registered yet (or the registry refused to say)
        log.info("%s: contract not checked against the model: %s", source("model"), error)
        return
    except UnsupportedSignatureError as error:
        raise DeploymentError(source, "model", f"{deployment.model_name}: {error}") from None
    except (MlflowException, OSError) as error:  # the signature could not be read
        raise DeploymentError(
            source, "model", f"cannot read the signature of {deployment.model_name}: {error}"
        ) from error
    for index, column in enumerate(spec.contract.columns):
        if column.name not in inputs:
            raise DeploymentError(
                source,
                f"contract.columns[{index}].name",
                f"{column.name!r} is not an input of {holder.uri}@{deployment.alias} "
                f"(inputs: {', '.join(inputs)})",
            )


@contextmanager
def _quick_registry() -> Iterator[None]:
    """MLflow HTTP calls that give up within seconds (a definitions load never stalls on a slow
    registry); the process's own settings are restored afterwards."""
    quick = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    saved = {name: os.environ.get(name) for name in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _answers(uri: str) -> bool:
    """Whether a registry URI is local (a file or database path) or its server accepts a TCP
    connection within a second (so an absent server never stalls a definitions load)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return parsed.scheme != "databricks"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=1):
            return True
    except OSError:
        return False


def check_together(deployments: Sequence[Deployment], layout: LakeLayout) -> None:
    """No deployment writes a table another one reads or writes (nor its own source): two
    deployments on one predictions table would overwrite each other's partitions."""
    owners: dict[str, str] = {}
    for deployment in deployments:
        tables = layout.deployment(deployment)
        owners.setdefault(tables.features.uri.rstrip("/"), f"{deployment.name} (source)")
    for deployment in deployments:
        tables = layout.deployment(deployment)
        written = {
            "validated": tables.validated,
            "quarantine": tables.quarantine,
            "predictions": tables.predictions,
            "archive": tables.archived_features,
        }
        for role, location in written.items():
            uri = location.uri.rstrip("/")
            if uri in owners:
                raise ValueError(
                    f"deployment {deployment.name}: its {role} table {uri} is also the table of "
                    f"{owners[uri]}; give it its own output.table"
                )
            owners[uri] = f"{deployment.name} ({role})"


def check_realtime(deployment: Deployment) -> None:
    """The deployment real-time insights score with: a probability per single-keyed customer."""
    if deployment.output.kind is not OutputKind.PROBABILITY or len(deployment.key) != 1:
        raise ValueError(
            f"batch-inference.realtime.deployment: {deployment.name} serves "
            f"{deployment.output.kind.value} keyed by {', '.join(deployment.key)}; insights "
            "need a probability keyed by one customer id column"
        )
