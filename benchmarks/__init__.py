"""Side-by-side performance runs of the scoring engine against its baselines."""
