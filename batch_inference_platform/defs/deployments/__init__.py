"""One folder per deployment, each a defs.yaml of type ScoringDeployment (no Python)."""
