"""The platform's Kafka topics, named in ``batch-inference.kafka.topics``."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from batch_inference_platform.config import KafkaSettings


@dataclass(frozen=True)
class Topics:
    """Where requests arrive (input) and where results, status changes and errors go."""

    input: str
    output: str
    status: str
    errors: str

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> Topics:
        """The topics named in the Kafka settings."""
        t = kafka.topics
        return cls(input=t.input, output=t.output, status=t.status, errors=t.errors)

    def all(self) -> list[str]:
        """Every topic, input first."""
        return list(astuple(self))
