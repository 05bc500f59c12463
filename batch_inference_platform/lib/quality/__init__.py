"""Data-quality rules: partition validation and score drift."""
