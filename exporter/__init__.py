"""The exporter: sources refresh snapshots asynchronously, collectors read them
synchronously, and an aiohttp server exposes /metrics for Prometheus."""
