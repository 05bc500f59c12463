"""``maintenance``: how the platform's Delta tables are maintained
(``batch-inference.maintenance``; the ``lake_maintenance`` asset in
``defs/maintenance/assets.py``)."""

import dagster as dg
import pydantic


class MaintenanceResource(dg.ConfigurableResource):
    """How tables are maintained (``batch-inference.maintenance``)."""

    vacuum_retention_hours: int = pydantic.Field(ge=0)
    """Unreferenced files older than this are deleted."""
    compact: bool = True
    include_features: bool = False
    """Maintain the source tables of demo deployments (``source.generator``) too: only where
    the platform writes them (locally); elsewhere they belong to the feature pipelines."""
