"""Dagster components of the platform: ``ScoringDeployment`` turns a defs.yaml into a use case."""

from batch_inference_platform.components.scoring_deployment import ScoringDeployment

__all__ = ["ScoringDeployment"]
