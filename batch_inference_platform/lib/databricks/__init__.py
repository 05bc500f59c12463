"""Azure Databricks: job-cluster specs, sizing from history, the wheel the cluster installs,
and one-time runs that retry on a smaller cluster when capacity is short."""
