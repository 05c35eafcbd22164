"""The bottom layer: typed configuration, logging, clock and error types shared by the
exporter and the remediations. It imports nothing else from kube-ballast."""
