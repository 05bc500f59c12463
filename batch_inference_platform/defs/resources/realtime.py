"""``realtime``: what the real-time assets talk to - Kafka (events in, insights and dead
letters out) and the Redis cache; secrets (SASL, Redis password) stay in environment
variables."""

import os
from typing import Any

import dagster as dg

from batch_inference_platform.config import KafkaSettings, RealtimeSettings
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.realtime.cache import RecommendationCache, connect
from batch_inference_platform.lib.realtime.events import EventKind

REDIS_PASSWORD_ENV = "REDIS_PASSWORD"


class RealtimeResource(dg.ConfigurableResource):
    """Settings of ``batch-inference.realtime`` and ``batch-inference.kafka``."""

    realtime_settings: dict[str, Any]
    kafka_settings: dict[str, Any]

    @property
    def settings(self) -> RealtimeSettings:
        return RealtimeSettings.model_validate(self.realtime_settings)

    @property
    def kafka(self) -> KafkaConfig:
        return KafkaSettings.model_validate(self.kafka_settings).as_config()

    def event_topics(self) -> dict[EventKind, str]:
        topics = self.settings.topics
        return {
            "journey": topics.journey_events,
            "transaction": topics.transactions,
            "decision": topics.credit_decisions,
        }

    def cache(self) -> RecommendationCache:
        settings = self.settings
        client = connect(settings.redis_url, os.environ.get(REDIS_PASSWORD_ENV))
        return RecommendationCache(client, settings.redis_prefix, settings.cache_ttl)
