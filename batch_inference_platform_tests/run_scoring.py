"""Run a deployment's scoring job (e.g. ``credit_risk__score_partition_job``) over a range of
days in this process, configured from the environment as the platform is; the cancellation
test interrupts it like `dagster` does."""

from __future__ import annotations

import sys

import dagster as dg

from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions


def main(job: str, first: str, last: str) -> int:
    defs = build_definitions(load_settings())
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(job).execute_in_process(
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
            instance=instance,
            raise_on_error=False,
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
