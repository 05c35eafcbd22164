"""The bottom layer: what the exporter and the receiver share.

Typed configuration (``config``), the error hierarchy (``errors``), logging with
redaction (``logging``), running a component until a signal stops it (``runtime``) and
the /healthz and /metrics plumbing of every HTTP server (``web``). It imports nothing
else from kube-ballast, so both components can build on it without depending on each
other.
"""
