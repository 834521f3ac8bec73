"""The contact sheet of an alignment: every photo, what was found in it, every aligned face.

One self-contained ``index.html`` (thumbnails inline as PNG data URIs), so a reviewer
can see at a glance that each crop is a face, upright and centred on the template,
and which photos gave none and why.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.files import write_text_atomic

__all__ = ["png_base64", "thumbnail", "write_align_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;font-size:.9rem;
vertical-align:top}th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}
figure{display:inline-block;margin:.2rem;text-align:center;font-size:.75rem}
"""


def png_base64(face: np.ndarray) -> str:
    """One ``uint8 (H, W, 3)`` RGB crop as base64 PNG (for JSON and data URIs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(face: np.ndarray) -> str:
    """An ``<img>`` of one ``uint8 (H, W, 3)`` RGB crop, inline."""
    data = png_base64(face)
    return f'<img alt="face" width="{face.shape[1]}" src="data:image/png;base64,{data}">'


def write_align_report(result: Any, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` for an :class:`~arcface_lab.models.faces.AlignResult`."""
    out_dir = Path(out_dir)
    summary = result.to_dict()
    counts = ", ".join(f"{n} {s}" for s, n in summary["photos"].items() if n)
    rows = []
    for record in result.photos:
        faces = "".join(
            (
                f"<figure>{thumbnail(result.faces[f.index])}<figcaption>#{f.index} "
                f"score {f.score:.3f}</figcaption></figure>"
                if f.index is not None
                else f"<figure>not aligned ({html.escape(f.status)})<br>"
                f"score {f.score:.3f}</figure>"
            )
            for f in record.faces
        )
        status = (
            html.escape(record.status)
            if record.status == "ok"
            else f'<span class="bad">{html.escape(record.status)}</span>'
            f"<br>{html.escape(record.message)}"
        )
        size = f"{record.size[1]}x{record.size[0]}" if record.size else ""
        rows.append(
            f"<tr><td>{html.escape(Path(record.photo).name)}<br>{size}</td><td>{status}</td>"
            f"<td>{faces}</td></tr>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>arcface_lab align</title>"
        f"<style>{_CSS}</style></head><body><h1>Aligned faces</h1>"
        f"<p>{summary['faces']} faces from {len(result.photos)} photo(s) ({html.escape(counts)})"
        f"; detector {html.escape(summary['detector'])}; faces under "
        f"{summary['min_face_px']} px are not aligned; template {summary['template']}.</p>"
        "<table><tr><th>photo</th><th>status</th><th>faces</th></tr>"
        f"{''.join(rows)}</table></body></html>\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "index.html"
    write_text_atomic(out, page)
    return out
