"""Async adapters: the MQTT consumer, the ingest service and the project-owned local services."""
