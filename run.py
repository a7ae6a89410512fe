"""Seed-compatible entry point: `python run.py -v experiments/<method>/<name>/`.

Same as `peftbench run ...`; works from a checkout without installing the package."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from peftbench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
