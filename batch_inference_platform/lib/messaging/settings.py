"""What the Kafka client needs to know (``batch-inference.kafka``), as plain values: the
platform's settings convert to it (``KafkaSettings.as_config``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batch_inference_platform.lib.messaging.topics import Topics


@dataclass(frozen=True)
class KafkaConfig:
    """The cluster (or Event Hubs' Kafka endpoint), its topics and producer tuning."""

    bootstrap_servers: str
    """host:port[,host:port]; empty: not configured (messages wait in the outbox)."""
    topics: Topics
    batch_size: int
    """Max bytes per producer batch."""
    linger_ms: int
    """Wait time to fill a batch before sending."""
    buffer_memory: int
    """Producer send-buffer size in bytes."""
    client_config: Mapping[str, str] = field(default_factory=dict)
    """Extra librdkafka settings (security.protocol, sasl.mechanism, ...)."""
    sasl_password_env: str = ""
    """Environment variable holding sasl.password; empty: none."""
