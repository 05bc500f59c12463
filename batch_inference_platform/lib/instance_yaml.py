"""The Dagster instances the platform ships (``dagster.yaml``).

Production (``instance_config``, committed as ``deploy/dagster.yaml``): PostgreSQL storage, step
logs in Azure Blob Storage (dagster-azure, managed identity), and a run queue that caps
concurrent runs (``scheduling.max-concurrent-jobs``), caps each tenant (``max-concurrent-runs``)
and starts higher ``dagster/priority`` first. Local (``local_instance_config``, the instance of
``make demo``/``make dev``): Dagster's default storage under ``DAGSTER_HOME``.

Both turn on run monitoring (``RUN_MONITORING``) with ``WorkerHealthRunLauncher``
(``batch_inference_platform/run_launcher.py``: ``DefaultRunLauncher`` plus a run-worker health
check), so that the daemon marks a run whose worker died FAILURE within a minute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from batch_inference_platform.lib.tenants import TenantDirectory

POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"

RUN_MONITORING: dict[str, Any] = {
    "enabled": True,
    # The daemon checks every STARTED run's worker this often: a worker that dies after its run
    # started is reported within one interval (two, 30 s, when only its code server's absence
    # shows it, see WorkerHealthRunLauncher).
    "poll_interval_seconds": 15,
    # A run that never reaches STARTED fails after this, found at the next poll: under a
    # minute (a launched worker imports the whole platform first: ~15 s on two busy cores).
    "start_timeout_seconds": 40,
    # A run whose termination was asked for is marked CANCELED after this even if its worker
    # never confirms (e.g. it was already dead).
    "cancel_timeout_seconds": 40,
    # DefaultRunLauncher cannot resume a run in a new worker; a dead worker fails the run.
    "max_resume_run_attempts": 0,
}
"""``run_monitoring`` of every instance the platform ships: a dead worker is FAILURE within a
minute (15 s poll, 40 s start and cancel timeouts)."""

LOCAL_DEQUEUE_SECONDS = 1
"""How often the local daemon looks for queued runs to launch (Dagster's default: 5 s, which a
person who pressed "Materialize" waits on average half of)."""

LAUNCHER_MODULE = "batch_inference_platform.run_launcher"
LAUNCHER_CLASS = "WorkerHealthRunLauncher"


def run_launcher_config(*, local_workers: bool) -> dict[str, Any]:
    """``run_launcher`` of an instance: ``WorkerHealthRunLauncher`` (see its docstring in
    ``batch_inference_platform/run_launcher.py`` for what ``local_workers`` means)."""
    return {
        "module": LAUNCHER_MODULE,
        "class": LAUNCHER_CLASS,
        "config": {"local_workers": local_workers},
    }


def local_instance_config() -> dict[str, Any]:
    """The ``dagster.yaml`` of the local instance (``make demo``/``make dev``): Dagster's default
    storage under ``DAGSTER_HOME``, its run queue polled every ``LOCAL_DEQUEUE_SECONDS``, every
    run worker on this machine, run monitoring on."""
    return {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": LOCAL_DEQUEUE_SECONDS},
        },
        "run_launcher": run_launcher_config(local_workers=True),
        "run_monitoring": dict(RUN_MONITORING),
        "telemetry": {"enabled": False},
    }


def local_instance_yaml() -> str:
    """``local_instance_config`` as YAML, with a header saying where it came from."""
    header = (
        "# The platform's local Dagster instance (make demo / make dev), written by the CLI\n"
        "# from batch_inference_platform.lib.instance_yaml.local_instance_config.\n"
    )
    return header + yaml.safe_dump(local_instance_config(), sort_keys=False)


def instance_config(
    *,
    max_concurrent_runs: int,
    tenants: TenantDirectory,
    postgres_url_env: str = POSTGRES_URL_ENV,
    azure_compute_logs: bool = True,
) -> dict[str, Any]:
    """The ``dagster.yaml`` content; the database URL stays in the environment. Without
    ``azure_compute_logs`` step logs stay on local disk (Dagster's default)."""
    config: dict[str, Any] = {
        "storage": {"postgres": {"postgres_url": {"env": postgres_url_env}}},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "concurrency": {
            "runs": {
                "max_concurrent_runs": max_concurrent_runs,
                "tag_concurrency_limits": [
                    # Jobs that must not overlap (the real-time windows) run one at a time.
                    {
                        "key": "bip/singleton",
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    },
                    *(
                        {"key": "tenant", "value": t.id, "limit": t.max_concurrent_runs}
                        for t in tenants.tenants.values()
                    ),
                ],
            }
        },
        "compute_logs": {
            "module": "dagster_azure.blob.compute_log_manager",
            "class": "AzureBlobComputeLogManager",
            "config": {
                "storage_account": {"env": "DAGSTER_COMPUTE_LOGS_ACCOUNT"},
                "container": {"env": "DAGSTER_COMPUTE_LOGS_CONTAINER"},
                "default_azure_credential": {},
                "prefix": "dagster-compute-logs",
                "upload_interval": 30,
            },
        },
        "run_launcher": run_launcher_config(local_workers=False),
        "run_monitoring": dict(RUN_MONITORING),
        "telemetry": {"enabled": False},
    }
    if not azure_compute_logs:
        del config["compute_logs"]
    return config


def instance_yaml(**kwargs: Any) -> str:
    """``instance_config`` as YAML, with a header saying where it came from."""
    env = kwargs.get("postgres_url_env", POSTGRES_URL_ENV)
    header = (
        "# Generated by `batch-inference dagster-yaml` from application.yml and the tenants "
        "file;\n# regenerate instead of editing. The database URL comes from "
        f"${env}, e.g.\n#   postgresql+psycopg2://user:password@host:5432/dagster\n"
        "# (dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for a bare "
        "postgresql:// URL).\n"
    )
    return header + yaml.safe_dump(instance_config(**kwargs), sort_keys=False)
