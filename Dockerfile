# syntax=docker/dockerfile:1
# kube-ballast's image: the package and its runtime dependencies on a slim Python,
# plus etcdctl (`kube-ballast etcd backup` verifies every snapshot with
# `etcdctl snapshot status`). One image for every workload in deploy/.
#
#   docker build -t REGISTRY/kube-ballast:0.1.0 .
#
# docs/deploy.md has the details; tests/deploy/test_deploy_image.py checks this file.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG ETCD_IMAGE=gcr.io/etcd-development/etcd:v3.5.17

# --- build: the wheels of kube-ballast and of every runtime dependency ------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY kubeballast/ kubeballast/
COPY core/ core/
COPY exporter/ exporter/
COPY remediations/ remediations/
COPY simulator/ simulator/
RUN ["python", "-m", "pip", "wheel", "--no-cache-dir", "--wheel-dir", "/wheels", "."]

# --- etcdctl, from etcd's release image ---------------------------------------------------
FROM ${ETCD_IMAGE} AS etcd

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# Installed from the wheels only (no index): the package and what it requires, nothing
# else. The wheels are bind-mounted, so they stay out of the image's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    ["python", "-m", "pip", "install", "--no-cache-dir", "--no-index", "--find-links", "/wheels", "kube-ballast"]
COPY --from=etcd /usr/local/bin/etcdctl /usr/local/bin/etcdctl
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without a passwd entry
# (the manifests run as 65532 too).
USER 65532:65532
EXPOSE 9808 9809
ENTRYPOINT ["kube-ballast"]
CMD ["--help"]
