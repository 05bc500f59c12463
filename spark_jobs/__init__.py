"""Code that runs where Spark runs - a local Spark Connect engine or a Databricks job cluster -
started through Dagster Pipes and shipped in the platform's wheel."""
