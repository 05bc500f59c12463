"""Operations: run-status publishing (and, later, alerts and SLA reports)."""
