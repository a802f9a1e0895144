"""An MPI-launched rank's life without the training: join the cluster, one collective, end
with the code given, through the ordered end as `python -m train` does (`ending.finish`), or with
`--script` as a script of yours does (`sys.exit`: its own code and exit hooks). tests/test_launch.py
checks that every rank ends with its code."""

import atexit
import sys

import numpy as np

from train import cluster
from train.cluster import ending

if __name__ == "__main__":
    if "--python-exit" in sys.argv:  # for measuring: Python's own exit, as before issue 23
        ending.install = lambda comm: None
    c = cluster.setup("CPU")
    c.all_sum(np.ones(2))
    code = int(sys.argv[1])
    if "--script" in sys.argv:
        atexit.register(print, "the script's own exit hook ran", flush=True)
        sys.exit(code)
    ending.finish(code)
