"""The Spark session a job scores with: the cluster's, or an embedded Sail engine locally."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession


@contextmanager
def spark_session() -> Iterator[SparkSession]:
    """The cluster's session on Databricks or where ``SPARK_REMOTE`` names a Spark Connect
    server; otherwise a Sail server (Spark Connect in Rust, reads and writes Delta) started in
    this process for the job's lifetime."""
    if os.environ.get("SPARK_REMOTE") or os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        yield SparkSession.builder.getOrCreate()
        return
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    address = server.listening_address
    assert address is not None, "the embedded Sail server did not start"
    try:
        session = SparkSession.builder.remote(f"sc://{address[0]}:{address[1]}").getOrCreate()
        yield session
        session.stop()
    finally:
        server.stop()
