"""MQTT delivery: topics, versioned JSON payloads, a durable outbox, commands."""
