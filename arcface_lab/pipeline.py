"""Moved to :mod:`arcface_lab.runs.pipeline`; this old name keeps imports working."""

from arcface_lab._moved import warn_moved
from arcface_lab.runs.pipeline import *  # noqa: F403

warn_moved(__name__)
