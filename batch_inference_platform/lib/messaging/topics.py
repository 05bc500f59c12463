"""The platform's Kafka topics, named in ``batch-inference.kafka.topics``."""

from __future__ import annotations

from dataclasses import astuple, dataclass


@dataclass(frozen=True)
class Topics:
    """Where requests arrive (input) and where results, status changes and errors go."""

    input: str
    output: str
    status: str
    errors: str

    def all(self) -> list[str]:
        """Every topic, input first."""
        return list(astuple(self))
