"""A Kubernetes API server on loopback: the test double, the embedded default and the
benchmark harness. It is the other side of the wire and imports no product code."""
