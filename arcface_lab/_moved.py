"""The module names arcface_lab had before the wings, kept so that old imports work.

Each old name (``arcface_lab.params``, ``arcface_lab.pipeline``, ...) is a module of
two imports: this warning and a star import of its new home. Nothing inside the
package imports an old name (``make test`` checks it).
"""

from __future__ import annotations

import warnings

__all__ = ["MOVED", "warn_moved"]

#: Old module name -> new module name.
MOVED = {
    "arcface_lab.params": "arcface_lab.config.params",
    "arcface_lab.pairs": "arcface_lab.data.pairs",
    "arcface_lab.validate": "arcface_lab.core.metrics",
    "arcface_lab.registry": "arcface_lab.engines.registry",
    "arcface_lab.quantize": "arcface_lab.engines.int8_search",
    "arcface_lab.bench": "arcface_lab.measure.bench",
    "arcface_lab.acceptance": "arcface_lab.measure.acceptance",
    "arcface_lab.notebooks": "arcface_lab.report.notebooks",
    "arcface_lab.pipeline": "arcface_lab.runs.pipeline",
}


def warn_moved(old: str) -> None:
    """A :class:`DeprecationWarning` that ``old`` is now :data:`MOVED`\\ ``[old]``."""
    warnings.warn(
        f"{old} moved to {MOVED[old]}; import it from there", DeprecationWarning, stacklevel=3
    )
