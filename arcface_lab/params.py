"""Moved to :mod:`arcface_lab.config.params`; this old name keeps imports working."""

from arcface_lab._moved import warn_moved
from arcface_lab.config.params import *  # noqa: F403

warn_moved(__name__)
