"""Moved to :mod:`arcface_lab.data.pairs`; this old name keeps imports working."""

from arcface_lab._moved import warn_moved
from arcface_lab.data.pairs import *  # noqa: F403

warn_moved(__name__)
