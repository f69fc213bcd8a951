"""What the 1M-item candidate caps of the batch strategies cost in label efficiency.

At 1M pool items and k = 50, core-set and BADGE choose among ``WORK_CAP // k`` = 200,000
candidates (20 % of the pool: a uniform random sample for core-set, the longest gradients for
BADGE), and k-means runs on a 32-d PCA projection above ``KMEANS_WORK_CAP``. A simulation at
1M is out of reach on 2 cores, so this runs `alloop simulate` on Rotten Tomatoes (pool 10,201)
with the caps scaled by 1/100 (``WORK_CAP`` 100,000, ``MIN_CANDIDATES`` 100, ``KMEANS_WORK_CAP``
20,000,000), which gives the same candidate share at k = 50 as 1M items with the real caps, and
compares with the uncapped run on the same seeds. Usage::

    python bench/cap_cost_sim.py [--seeds 3] [--out runs/cap-cost] [alloop simulate options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import strategies.batch as batch
    from loop import cli

    args = sys.argv[1:]
    scaled = "--uncapped" not in args
    args = [a for a in args if a != "--uncapped"]
    if scaled:
        batch.WORK_CAP //= 100
        batch.MIN_CANDIDATES //= 100
        batch.KMEANS_WORK_CAP //= 100
    sys.argv = ["alloop", "simulate", *args]
    cli.main()


if __name__ == "__main__":
    main()
