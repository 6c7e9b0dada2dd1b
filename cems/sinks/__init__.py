"""Sinks: where results go (InfluxDB line protocol over HTTP; alerts over MQTT and webhooks)."""
