"""Moved to :mod:`arcface_lab.engines.int8_search`; this old name keeps imports working."""

from arcface_lab._moved import warn_moved
from arcface_lab.engines.int8_search import *  # noqa: F403

warn_moved(__name__)
