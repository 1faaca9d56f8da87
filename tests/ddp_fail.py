"""`gankit` with a failure injected into one process, for the distributed-failure test.

Run under torchrun: the process whose RANK is $FAIL_RANK raises in its 3rd training iteration
(after writing the time to $FAIL_STAMP); the others run normally.
"""

import os
import sys
import time

import gankit.train
from gankit.cli import main

if os.environ.get("RANK") == os.environ["FAIL_RANK"]:
    real_iteration = gankit.train.iteration
    calls = 0

    def failing_iteration(*args, **kwargs):
        global calls
        calls += 1
        if calls == 3:
            with open(os.environ["FAIL_STAMP"], "w") as f:
                f.write(str(time.time()))
            raise RuntimeError(f"injected failure in process {os.environ['RANK']}")
        return real_iteration(*args, **kwargs)

    gankit.train.iteration = failing_iteration

sys.exit(main(sys.argv[1:]))
