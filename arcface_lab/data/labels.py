"""Identity labels, one per face, for the all-pairs and 1:N protocols.

A labels file is one of:

* a CSV with a header naming an ``identity`` (or ``label``) column, one row per face
  in embedding order (other columns, such as the image path, are ignored);
* a text file (``.txt``, ``.lst``): one label per line;
* a 1-D ``.npy`` array of integers or strings.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from arcface_lab.errors import DataError

__all__ = ["LABEL_COLUMNS", "load_labels"]

#: The CSV columns read as the identity, first found wins.
LABEL_COLUMNS = ("identity", "label")


def _csv_labels(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        column = next((c for c in LABEL_COLUMNS if c in header), None)
        if column is None:
            raise DataError(
                f"{path}: expected a header with an {' or '.join(LABEL_COLUMNS)} column, "
                f"got {header}"
            )
        labels = []
        for row in reader:  # blank lines are skipped; line_num counts them
            value = (row.get(column) or "").strip()
            if not value:
                raise DataError(f"{path}, line {reader.line_num}: empty {column}")
            labels.append(value)
    return labels


def load_labels(path: str | Path, faces: int | None = None) -> np.ndarray:
    """The labels in ``path`` as a 1-D array; with ``faces``, exactly that many.

    Raises:
        DataError: no such file, an unknown format, an empty label, or a count that does
            not match the embeddings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such labels file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            labels = np.asarray(_csv_labels(path))
        elif suffix in (".txt", ".lst"):
            lines = path.read_text(encoding="utf-8").splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    raise DataError(f"{path}, line {number}: empty label")
            labels = np.asarray([line.strip() for line in lines])
        elif suffix == ".npy":
            labels = np.load(path, allow_pickle=False)
            if labels.ndim != 1 or labels.dtype.kind not in "iuU":
                raise DataError(
                    f"{path}: expected a 1-D array of integer or string labels, got "
                    f"{labels.dtype} {labels.shape}"
                )
        else:
            raise DataError(f"{path}: expected a .csv (identity column), .txt or .npy labels file")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the labels ({exc})") from None
    if faces is not None and labels.shape[0] != faces:
        raise DataError(f"{path}: {labels.shape[0]} labels for {faces} embeddings (one per face)")
    return labels
