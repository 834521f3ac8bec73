"""``index.html`` of a run, rendered from the run folder's JSON alone.

No measurement happens here, so a run measured on a GPU machine that has only
PyTorch can be rendered anywhere (``arcface-lab render RUN_DIR``). The page
is self-contained: no scripts, no external assets. It links the notebook
pages listed in ``notebooks.json`` (written by :mod:`arcface_lab.report.notebooks`)
and says which notebook failed, if one did.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.files import write_text_atomic
from arcface_lab.report import tables
from arcface_lab.report.run_folder import RunFolder
from arcface_lab.report.tables import Table, precision_summary

__all__ = ["precision_summary", "render"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;font-size:.9rem}
th{background:#f3f3f3}.pass{color:#176d2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.banner{padding:.6rem 1rem;border-radius:4px;font-size:1.2rem}
.bp{background:#e5f5e8}.bf{background:#fde7ea}code{background:#f3f3f3;padding:0 .2rem}
.na{color:#6b6b6b;font-weight:600}
pre{background:#f7f7f7;padding:.5rem;overflow-x:auto}
figure{display:inline-block;margin:.3rem;font-size:.75rem;vertical-align:top;max-width:14rem}
"""


def _table(table: Table) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in table.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _failure(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    return (
        f'<p class="banner bf">The run FAILED: {html.escape(error["error"])}</p>'
        f"<details><summary>traceback</summary>"
        f"<pre>{html.escape(error.get('traceback', ''))}</pre></details>"
    )


def _verdict(verdict: Mapping[str, Any] | None) -> str:
    if not verdict:
        return ""
    ok = verdict["passed"]
    hw = verdict.get("hardware_class")
    note = verdict.get("target_note")
    return (
        f'<p class="banner {"bp" if ok else "bf"}">Verdict: '
        f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></p>'
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + "<h2>Acceptance</h2>"
        + (f"<p>Hardware class: <code>{html.escape(hw)}</code></p>" if hw else "")
        + _table(tables.checks(verdict))
        + "<h3>Acceptance-matrix row</h3><pre>| run | device | checks | verdict |\n"
        f"|---|---|---|---|\n{html.escape(verdict['matrix_row'])}</pre>"
    )


def _notebooks(run_dir: Path, rendered: Any, failed_run: bool) -> str:
    """Links to the notebook pages, or why there are none."""
    if not rendered and failed_run:
        return "<h2>Notebooks</h2><p>Not rendered: the run failed before they ran.</p>"
    if not rendered:
        return (
            "<h2>Notebooks</h2><p>Not rendered for this run (<code>--no-render</code>). "
            f"<code>arcface-lab render {html.escape(str(run_dir))}</code> executes them "
            "where papermill is installed.</p>"
        )
    items, failed = [], []
    for nb in rendered["notebooks"]:
        name = html.escape(nb["name"])
        link = f'<a href="{html.escape(nb["html"])}">{name}</a>' if nb.get("html") else name
        if nb["status"] == "ok":
            items.append(f"<li>{link}</li>")
            continue
        failed.append(nb)
        items.append(
            f'<li>{link} <span class="fail">FAILED</span>: {html.escape(nb["error"])}; '
            f'papermill\'s error notebook: <a href="{html.escape(nb["ipynb"])}">'
            f'{html.escape(nb["ipynb"])}</a></li>'
        )
    banner = ""
    if failed:
        names = ", ".join(html.escape(nb["name"]) for nb in failed)
        banner = f'<p class="banner bf">Notebook FAILED: {names}</p>'
    return f"{banner}<h2>Notebooks</h2><ul>{''.join(items)}</ul>"


def _optimize(optimized: Mapping[str, Any] | None) -> str:
    if not optimized:
        return ""
    host = optimized["host"]
    chosen = optimized.get("chosen")
    if chosen:
        what = (
            f"Chosen: <b>{html.escape(chosen['label'])}</b>, "
            f"{chosen['speedup_vs_reference']:.2f}x {html.escape(optimized['reference']['label'])}"
            f" at batch {optimized['batch_size']}, the fastest of the candidates that passed "
            "every gate."
        )
    else:
        what = '<span class="fail">No candidate passed every gate.</span>'
    injected = " (injected)" if host.get("injected") else ""
    return f"<h2>Optimize on {html.escape(host['class'])}{injected}</h2><p>{what}</p>" + _table(
        tables.candidates(optimized)
    )


def _section(title: str, table: Table, intro: str = "") -> str:
    """A heading and its table; nothing when the table has no rows."""
    if not table.rows:
        return ""
    return f"<h2>{html.escape(title)}</h2>" + (f"<p>{intro}</p>" if intro else "") + _table(table)


def _verification(ver: Mapping[str, Any]) -> str:
    kind = ver.get("data_kind", "?")
    note = (
        " (synthetic pairs: not real faces, accuracy means nothing)" if kind == "synthetic" else ""
    )
    label = f"real faces, {ver.get('pairs', 0)} pairs" if kind == "real" else None
    title = f"Verification: {label or str(ver.get('pairs', 0)) + ' pairs, ' + kind}{note}"
    parts = [_section(title, tables.verification(ver))]
    if kind == "real":
        parts.append(
            _section(
                f"Genuine and impostor cosines ({label})",
                tables.score_distributions(ver),
                "Genuine: each face with its mirror and with itself shifted; impostor: two "
                "people in one photo. Margin: the worst genuine minus the best impostor.",
            )
        )
    return "".join(parts)


def _worst_faces(drift: Mapping[str, Any]) -> str:
    """Thumbnails of the real faces that drifted most, with each engine's cosine on them."""
    thumbs = drift.get("thumbnails") or {}
    if not thumbs:
        return ""
    engines = drift.get("engines") or {}
    figures = []
    for idx, data in thumbs.items():
        cos = ", ".join(
            f"{html.escape(name)} {e['per_face'][int(idx)]:.5f}"
            for name, e in engines.items()
            if int(idx) < len(e.get("per_face") or [])
        )
        figures.append(
            f'<figure><img alt="face {idx}" width="112" src="data:image/png;base64,{data}">'
            f"<figcaption>#{html.escape(idx)}<br>{cos}</figcaption></figure>"
        )
    return (
        f"<h2>Worst-drift faces (real faces, {drift.get('images', 0)} validation faces)</h2>"
        "<p>Each engine's lowest per-face cosines against the reference.</p>"
        f"<div class='faces'>{''.join(figures)}</div>"
    )


_MEMORY_NOTE = (
    "Each engine timed in a process of its own; memory is that process's peak: RSS on CPU; "
    "on GPU, NVML's usage of the process where NVML can see it, else the device's used "
    "memory (both include the CUDA context)."
)


def _environment(env: Mapping[str, Any]) -> str:
    params = html.escape(json.dumps(env.get("params", {}), indent=2))
    return (
        "<h2>Environment</h2>"
        + _table(tables.environment(env))
        + f"<details><summary>params</summary><pre>{params}</pre></details>"
    )


def render(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` from its JSON files; return its path.

    Raises:
        InputError: ``run_dir`` is not a run folder (no ``environment.json``), or one of
            its files is not valid JSON.
    """
    folder = RunFolder(Path(run_dir))
    env = folder.read("environment")
    run = {n: folder.read(n, required=False) for n in ("error", "verdict", "notebooks")}
    optimized = folder.read("optimize", required=False)
    drift = folder.read("drift", required=False) or {}
    thresholds = (env.get("params") or {}).get("thresholds") or {}
    parts = [
        f"<h1>arcface_lab run: {html.escape(folder.run_id)}</h1>",
        _failure(run["error"]),
        _verdict(run["verdict"]),
        (
            _notebooks(folder.path, run["notebooks"], bool(run["error"]))
            if run["verdict"] or run["notebooks"]
            else ""
        ),
        _optimize(optimized),
        _section("Engines", tables.engines(drift)),
        _section("Embedding drift against the reference", tables.drift(drift, thresholds)),
        _worst_faces(drift),
        _verification(folder.read("verification", required=False) or {}),
        _section(
            "Latency and memory",
            tables.latency(folder.read("bench", required=False) or {}),
            _MEMORY_NOTE,
        ),
        _environment(env),
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>arcface_lab "
        f"{html.escape(folder.run_id)}</title><style>{_CSS}</style></head><body>"
        f"{''.join(parts)}</body></html>\n"
    )
    out = folder.path / "index.html"
    write_text_atomic(out, page)
    return out
