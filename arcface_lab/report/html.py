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
from pathlib import Path
from typing import Any

from arcface_lab.core.files import write_text_atomic
from arcface_lab.errors import InputError

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
"""


def _load(run_dir: Path, name: str, required: bool = True) -> Any:
    path = run_dir / name
    if not path.is_file():
        if required:
            raise InputError(f"{run_dir}: no {name}; is this a run folder?")
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _run_name(run_dir: Path) -> str:
    name = run_dir.name.lstrip(".")
    return name.removesuffix(".partial")


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


def precision_summary(info: dict[str, Any]) -> str:
    """What an engine ran in, from what it recorded (``engine.info.to_dict()``).

    OpenVINO's counts are read back from the compiled model and TensorRT's from its
    engine inspector; for the others the asked precision and what stayed FP32.
    """
    details = info.get("details") or {}
    precision = str(info.get("precision", "?"))

    def counts(mapping: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in mapping.items())

    if details.get("runtime_precisions"):
        return f"{counts(details['runtime_precisions'])} layers (compiled model)"
    layer_counts = (details.get("layer_precisions") or {}).get("counts")
    if layer_counts:
        return f"{counts(layer_counts)} layers (engine inspector)"
    if details.get("providers"):
        return f"{precision} on {details['providers'][0]}"
    kept = details.get("fp32_layers")
    return f"{precision}, FP32: {', '.join(kept)}" if kept else precision


def candidate_rows(optimized: dict[str, Any]) -> list[list[Any]]:
    """optimize.json's candidates as table rows (index.html and notebook 01 share them)."""
    rows = []
    for c in optimized["candidates"]:
        lat = c.get("latency_ms") or {}
        rows.append(
            [
                c["label"],
                c["status"],
                c["support"]["status"],
                None if not lat else round(lat["median"], 1),
                None if c["speedup_vs_reference"] is None else round(c["speedup_vs_reference"], 2),
                c["cosine_min"],
                c["held_out_cosine_min"],
                c["decision_flips"],
                None if c["first_run_s"] is None else round(c["first_run_s"], 1),
                c["reason"],
            ]
        )
    return rows


CANDIDATE_HEADER = [
    "candidate",
    "status",
    "on this host",
    "median ms",
    "speedup",
    "cosine min",
    "held-out cosine min",
    "flips",
    "first run s",
    "reason",
]


def _optimize(optimized: dict[str, Any]) -> str:
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
        CANDIDATE_HEADER, candidate_rows(optimized)
    )


def _engines(drift: dict[str, Any]) -> str:
    rows = []
    for name, e in (drift.get("engines") or {}).items():
        info = e["info"]
        art = info.get("artifact") or {}
        skipped = "; ".join(f"{f['backend']}: {f['reason']}" for f in info.get("fallbacks", []))
        rows.append(
            [
                name,
                info.get("device"),
                precision_summary(info),
                f"{art.get('kind', 'none')} ({art.get('origin', '-')})",
                skipped or "none",
                "; ".join(info.get("warnings", [])) or "none",
            ]
        )
    if not rows:
        return ""
    header = ["engine", "device", "ran in", "artifact (origin)", "skipped backends", "warnings"]
    return "<h2>Engines</h2>" + _table(header, rows)


def _environment(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or {}
    model = env["model"]
    rows = [
        ["model", f"{model['spec']} ({model.get('kind', '?')}, {model.get('arch') or '?'})"],
        ["model sha256", model.get("sha256") or "n/a"],
        ["cpu", f"{env['cpu']} ({env.get('cpu_count', '?')} logical cores)"],
        ["gpu", gpu.get("name", "none")],
    ]
    if gpu:
        rows += [
            ["compute capability", gpu.get("capability", "n/a")],
            ["memory", f"{gpu['memory_mb']} MiB" if gpu.get("memory_mb") else "not recorded"],
            ["CUDA", gpu.get("cuda", "n/a")],
            ["cuDNN", gpu.get("cudnn") or "not recorded"],
            ["driver", gpu.get("driver") or "not recorded"],
        ]
    rows += [
        ["platform", env["platform"]],
        ["host", env.get("host", "")],
        ["params file", env["params_file"]],
        ["started", env["started_at"]],
    ] + [[k, v] for k, v in env["versions"].items()]
    params = html.escape(json.dumps(env.get("params", {}), indent=2))
    return (
        "<h2>Environment</h2>"
        + _table(["", ""], rows)
        + f"<details><summary>params</summary><pre>{params}</pre></details>"
    )


def render(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` from its JSON files; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    env = _load(run_dir, "environment.json")
    error = _load(run_dir, "error.json", required=False)
    verdict = _load(run_dir, "verdict.json", required=False)
    bench = _load(run_dir, "bench.json", required=False) or {"records": []}
    ver = _load(run_dir, "verification.json", required=False) or {}
    drift = _load(run_dir, "drift.json", required=False) or {}
    rendered = _load(run_dir, "notebooks.json", required=False)
    optimized = _load(run_dir, "optimize.json", required=False)

    parts = [f"<h1>arcface_lab run: {html.escape(_run_name(run_dir))}</h1>"]
    if error:
        parts.append(
            f'<p class="banner bf">The run FAILED: {html.escape(error["error"])}</p>'
            f"<details><summary>traceback</summary>"
            f"<pre>{html.escape(error.get('traceback', ''))}</pre></details>"
        )
    if verdict:
        ok = verdict["passed"]
        parts.append(
            f'<p class="banner {"bp" if ok else "bf"}">Verdict: '
            f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></p>'
        )
        if verdict.get("target_note"):
            parts.append(f"<p>{html.escape(verdict['target_note'])}</p>")
        rows = [
            [
                c["metric"],
                c["target"],
                c["measured"],
                c.get("status") or ("pass" if c["passed"] else "FAIL"),
                "; ".join(filter(None, [c.get("note", ""), c.get("floor", "")])),
            ]
            for c in verdict["checks"]
        ]
        header = ["metric", "target", "measured", "verdict", "note"]
        hw = verdict.get("hardware_class")
        parts.append(
            "<h2>Acceptance</h2>"
            + (f"<p>Hardware class: <code>{html.escape(hw)}</code></p>" if hw else "")
            + _table(header, rows)
        )
        parts.append(
            "<h3>Acceptance-matrix row</h3><pre>| run | device | checks | verdict |\n"
            f"|---|---|---|---|\n{html.escape(verdict['matrix_row'])}</pre>"
        )
    if verdict or rendered:
        parts.append(_notebooks(run_dir, rendered, bool(error)))
    if optimized:
        parts.append(_optimize(optimized))
    parts.append(_engines(drift))
    if ver.get("engines"):
        kind = ver.get("data_kind", "?")
        note = (
            " (synthetic pairs: not real faces, accuracy means nothing)"
            if kind == "synthetic"
            else ""
        )
        rows = [
            [
                name,
                e["reference"]["accuracy"],
                e["engine"]["accuracy"],
                e["accuracy_delta"],
                e["decision_flips"],
            ]
            for name, e in ver["engines"].items()
        ]
        parts.append(
            f"<h2>Verification: {ver['pairs']} pairs, {html.escape(kind)}{note}</h2>"
            + _table(["engine", "reference acc", "engine acc", "delta", "decision flips"], rows)
        )
    if bench["records"]:
        rows = [
            [
                r["backend"],
                r["precision"],
                r["batch_size"],
                r["latency_ms"]["median"],
                r["latency_ms"]["p90"],
                r["throughput_ips"],
                r["speedup_vs_reference"],
                r["cov"],
                r.get("cosine_min"),
                (
                    f"{r['peak_memory_mb']:.0f} {r['memory_kind']}"
                    if r.get("peak_memory_mb") is not None
                    else None
                ),
                r["device"],
            ]
            for r in bench["records"]
        ]
        header = ["backend", "precision", "batch", "median ms", "p90 ms", "img/s", "speedup", "CoV"]
        parts.append(
            "<h2>Latency and memory</h2><p>Each engine timed in a process of its own; "
            "memory is that process's peak: RSS on CPU; on GPU, NVML's usage of the process "
            "where NVML can see it, else the device's used memory (both include the CUDA "
            "context).</p>" + _table([*header, "cosine min", "peak MB", "device"], rows)
        )
    parts.append(_environment(env))
    title = html.escape(_run_name(run_dir))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>arcface_lab {title}"
        f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    out = run_dir / "index.html"
    write_text_atomic(out, page)
    return out
