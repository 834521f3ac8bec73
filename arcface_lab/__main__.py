"""``python -m arcface_lab``: the same command line as ``arcface-lab``."""

import sys

from arcface_lab.cli import main

sys.exit(main())
