"""An in-repo HTTP fake of the Azure Databricks REST API (Jobs one-time runs, DBFS, Clusters)
for tests: the real ``databricks-sdk`` and ``dagster_databricks`` talk to it on loopback, and it
really executes each submitted run's task as a local subprocess."""

from .server import FakeDatabricks, FakeRun

__all__ = ["FakeDatabricks", "FakeRun"]
