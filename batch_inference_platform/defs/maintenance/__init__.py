"""Lake maintenance: every platform table compacted and vacuumed on a schedule."""
