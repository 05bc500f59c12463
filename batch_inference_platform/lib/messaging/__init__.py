"""Messages between clients and the platform on Kafka: versioned JSON schemas, the topics, and
a plain Kafka client (confluent-kafka) that works against Apache Kafka and Azure Event Hubs."""
