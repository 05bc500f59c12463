"""``policy``: the limits a partition must meet to be scored, and the drift alarm level."""

from collections.abc import Mapping

import dagster as dg

from batch_inference_platform.lib.quality.validation import ValidationPolicy


class QualityPolicyResource(dg.ConfigurableResource):
    """Limits a partition must meet to be scored, and the drift alarm level."""

    min_rows: int
    max_null_rate: float
    max_quarantine_rate: float
    max_duplicate_rate: float
    psi_threshold: float
    drift_bins: int

    def validation_for(self, overrides: Mapping[str, float | int]) -> ValidationPolicy:
        """The limits for a deployment: these, with the deployment's own ``checks`` on top."""
        return ValidationPolicy(
            min_rows=int(overrides.get("min_rows", self.min_rows)),
            max_null_rate=float(overrides.get("max_null_rate", self.max_null_rate)),
            max_quarantine_rate=float(
                overrides.get("max_quarantine_rate", self.max_quarantine_rate)
            ),
            max_duplicate_rate=float(overrides.get("max_duplicate_rate", self.max_duplicate_rate)),
        )

    def drift_for(self, overrides: Mapping[str, float | int]) -> tuple[float, int]:
        """The PSI alarm level and bin count for a deployment (its ``checks`` on top)."""
        return (
            float(overrides.get("psi_threshold", self.psi_threshold)),
            int(overrides.get("drift_bins", self.drift_bins)),
        )
