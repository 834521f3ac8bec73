"""The report wing: ``index.html`` from a run folder, and the notebooks executed over it.

The names below were ``arcface_lab.report`` before the wings; they keep working.
"""

from arcface_lab.report.html import precision_summary, render

__all__ = ["precision_summary", "render"]
