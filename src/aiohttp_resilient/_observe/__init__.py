"""Observability: stats, their snapshot and table, Prometheus and OpenTelemetry."""
