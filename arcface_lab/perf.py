"""``python -m arcface_lab.perf`` (``make bench``): :func:`arcface_lab.runs.perf.main`."""

from arcface_lab.runs.perf import *  # noqa: F403
from arcface_lab.runs.perf import main

if __name__ == "__main__":
    raise SystemExit(main())
