"""The MLflow model registry: resolution, compatibility, loading and demo training."""
