"""kube-ballast: a stability toolkit for large Kubernetes clusters.

The distribution maps the repository's top-level code folders onto this one import
namespace (``core/`` -> ``kubeballast.core`` and so on, see ``package-dir`` in
pyproject.toml), so nothing installs bare ``exporter`` or ``simulator`` modules into
site-packages. This package itself holds only the version and the command line,
which sits on top of every layer.
"""

__version__ = "0.1.0"
