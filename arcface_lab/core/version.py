"""The package version and the checkout's commit.

Here, below every wing, so that any wing may record them.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

#: The folder holding the package: the repository in a source checkout (its ``params/``,
#: ``notebooks/`` and ``.git`` are there); elsewhere, wherever the package was installed.
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> dict[str, object] | None:
    """The commit of the checkout this package runs from: ``{"commit", "dirty"}``.

    None where the package is not in a git checkout (an installed wheel, a copied tree)
    or git is not installed; a report then says "not a git checkout".
    """
    import subprocess

    root = REPO_ROOT
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
