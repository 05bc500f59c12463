"""Entry point of the Spark scoring job, launched by Dagster Pipes: a subprocess locally
(``--pipes subprocess``) or a Databricks one-time run (``--pipes dbfs``).

It reads the ``ScoringRequest`` from the Pipes extras, scores on Spark and reports an
``EngineResult`` (rows, timings, score statistics and per-partition errors) back as a Pipes
custom message; the Dagster asset turns it into metadata and checks.
"""

from __future__ import annotations

import argparse
import sys

from dagster_pipes import (
    PipesContextLoader,
    PipesDbfsContextLoader,
    PipesDbfsMessageWriter,
    PipesDefaultContextLoader,
    PipesDefaultMessageWriter,
    PipesExtras,
    PipesMessageWriter,
    open_dagster_pipes,
)

from batch_inference_platform.lib.scoring.request import REQUEST_EXTRA, ScoringRequest
from spark_jobs.scoring import score_on_spark
from spark_jobs.session import spark_session


class ClusterMessageWriter(PipesDbfsMessageWriter):
    """Pipes messages through DBFS; the cluster's log folder is reported where the Spark
    conf names it (Databricks sets it when log delivery is on) and skipped where it does not -
    the driver's stdout and stderr also travel as Pipes messages when Dagster asks for them."""

    def get_opened_extras(self) -> PipesExtras:
        try:
            return super().get_opened_extras()
        except Exception:  # a session without Databricks' usage tags: no log folder to report
            return {}


def _pipes_io(kind: str) -> tuple[PipesContextLoader, PipesMessageWriter]:
    if kind == "dbfs":
        return PipesDbfsContextLoader(), ClusterMessageWriter()
    return PipesDefaultContextLoader(), PipesDefaultMessageWriter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="score-partitions", description=__doc__)
    parser.add_argument("--pipes", choices=["subprocess", "dbfs"], default="subprocess")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    loader, writer = _pipes_io(args.pipes)
    # The session first: on Databricks the DBFS message writer looks it up when Pipes opens.
    with (
        spark_session() as spark,
        open_dagster_pipes(context_loader=loader, message_writer=writer) as pipes,
    ):
        request = ScoringRequest.from_json(pipes.get_extra(REQUEST_EXTRA))
        pipes.log.info(
            f"scoring {', '.join(request.keys)} with {request.model.name} v{request.model.version}"
        )
        result = score_on_spark(spark, request, pipes.log.info)
        pipes.report_custom_message(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
