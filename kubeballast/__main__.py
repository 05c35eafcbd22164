"""``python -m kubeballast``: the same command as the ``kube-ballast`` console script.

Tests and environments without the console script on PATH use this form.
"""

import sys

from kubeballast.cli import main

if __name__ == "__main__":
    sys.exit(main())
