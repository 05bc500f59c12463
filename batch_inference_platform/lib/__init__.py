"""Plain-Python core shared by the Dagster definitions, the HTTP service and the CLI."""
