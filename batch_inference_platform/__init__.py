"""Batch inference platform: Delta feature tables + MLflow models -> versioned prediction tables."""
