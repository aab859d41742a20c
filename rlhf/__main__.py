"""``python -m rlhf`` is the ``rlhf`` command (``torchrun -m rlhf ppo ...`` launches it once per rank)."""

import sys

from rlhf.cli import main

sys.exit(main())
