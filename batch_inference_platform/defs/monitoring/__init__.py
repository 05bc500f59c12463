"""Monitoring: job status to clients, run metrics and traces, alerts, the SLA report."""
