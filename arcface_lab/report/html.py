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
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.files import write_text_atomic
from arcface_lab.core.speed import format_interval
from arcface_lab.report import tables
from arcface_lab.report.matrix import COLUMNS, MatrixRow, matrix_row, to_markdown
from arcface_lab.report.run_folder import RunFolder
from arcface_lab.report.tables import Table, precision_summary

__all__ = ["MATRIX_FILE", "precision_summary", "render"]

#: The run's own one-row acceptance matrix, written beside ``index.html``.
MATRIX_FILE = "ACCEPTANCE_MATRIX.md"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;font-size:.9rem}
th{background:#f3f3f3}.pass{color:#176d2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.banner{padding:.6rem 1rem;border-radius:4px;font-size:1.2rem}
.bp{background:#e5f5e8}.bf{background:#fde7ea}code{background:#f3f3f3;padding:0 .2rem}
.na{color:#6b6b6b;font-weight:600}
pre{background:#f7f7f7;padding:.5rem;overflow-x:auto;white-space:pre-wrap}
td.pass{background:#e5f5e8}td.fail{background:#fde7ea}td.na{background:#f0f0f0}
.headline th{width:11rem}.headline td{font-size:.95rem}
nav{font-size:.85rem;margin-bottom:1rem}nav a{margin-right:.8rem}
@media print{nav{display:none}}
figure{display:inline-block;margin:.3rem;font-size:.75rem;vertical-align:top;max-width:14rem}
"""


#: Status words and the class their cell is coloured with.
_STATUS_CLASS = {
    **dict.fromkeys(("pass", "PASS", "passed", "chosen", "True"), "pass"),
    **dict.fromkeys(("FAIL", "fail", "failed_gate", "error", "missing", "False"), "fail"),
    **dict.fromkeys(
        ("n/a", "not_native", "unavailable", "over_budget", "emulated", "cannot_win"), "na"
    ),
}
#: Columns whose cells are a status (coloured by :data:`_STATUS_CLASS`).
_STATUS_COLUMNS = frozenset({"status", "verdict", "stable", "on this host"})


def _format(v: Any) -> str:
    """A cell's text: integers as integers, other floats to six significant digits."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"
    return str(v)


def _table(table: Table) -> str:
    status_cols = {i for i, h in enumerate(table.header) if h in _STATUS_COLUMNS}

    def row(r: list[Any]) -> str:
        cells = []
        for i, v in enumerate(r):
            text = _format(v)
            css = _STATUS_CLASS.get(text) if i in status_cols else None
            attr = f' class="{css}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        return "<tr>" + "".join(cells) + "</tr>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    return f"<table><tr>{head}</tr>{''.join(row(r) for r in table.rows)}</table>"


def _kind(model: Mapping[str, Any]) -> str:
    """Whether the model is trained, in words a reviewer needs (a seeded net is not)."""
    if model.get("zoo"):
        zoo = model["zoo"]
        return f"trained (zoo, {zoo.get('license', 'license not recorded')})"
    if model.get("kind") == "seeded":
        return "seeded, untrained: speed and drift only, accuracy means nothing"
    return f"user's {model.get('kind', 'model')}"


def _hardware(env: Mapping[str, Any]) -> str:
    hw = env.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    gen = f", {cpu['generation']}" if cpu.get("generation") else ""
    isa = ", ".join(f for f in cpu.get("flags", ()) if f.startswith(("avx2", "avx512", "amx")))
    line = f"{env.get('hardware_class', '?')}: {env.get('cpu', '?')}{gen}"
    line += f", {cpu.get('threads', env.get('cpu_count', '?'))} threads"
    if isa:
        line += f"; ISA {isa}"
    if cpu.get("isa_cap"):
        line += f" (kernels capped at {cpu['isa_cap']} by ONEDNN_MAX_CPU_ISA)"
    gpu = env.get("gpu")
    if gpu:
        line += f"; GPU {gpu['name']} (sm {gpu.get('capability', '?')}, {gpu.get('memory_mb')} MiB)"
    return line


def _commit(env: Mapping[str, Any]) -> str:
    if "git" not in env:
        return "not recorded (a run from before commits were recorded)"
    git = env["git"]
    if not git:
        return "not a git checkout"
    return f"{git['commit'][:12]}" + (" (with uncommitted changes)" if git.get("dirty") else "")


_LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt", "numpy")


def _distinct(measured: float, target: str) -> str:
    """``measured`` to 4 significant digits, or as many more as tell it from the target's
    number (0.998961 against ``>= 0.999`` is 0.99896, never a failing "0.999")."""
    found = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", target)
    bound = float(found.group()) if found else None
    for digits in range(4, 13):
        text = f"{measured:.{digits}g}"
        if bound is None or float(text) != bound or measured == bound:
            return text
    return repr(measured)


def _one_sentence(check: Mapping[str, Any]) -> str:
    """A failed check as one sentence: what, measured against what, and why where known."""
    measured = check.get("measured")
    target = str(check.get("target", ""))
    got = (
        "nothing was measured"
        if measured is None
        else f"measured {_distinct(float(measured), target)}"
    )
    note = f" ({check['note']})" if check.get("note") else ""
    return f"{check['metric']}: {got}, target {check['target']}{note}."


def _headline(
    folder: RunFolder,
    env: Mapping[str, Any],
    verdict: Mapping[str, Any] | None,
    optimized: Mapping[str, Any] | None,
) -> str:
    """The first screen: model, hardware, date, commit, libraries, choice, memory, verdict."""
    model = env["model"]
    dim = f", {model['embedding_dim']}-d" if model.get("embedding_dim") else ""
    versions = env.get("versions") or {}
    libs = ", ".join(f"{k} {versions[k]}" for k in _LIBRARIES if k in versions)
    rows: list[tuple[str, str]] = [
        ("model", f"{model['spec']}{dim}, {_kind(model)}"),
        ("model sha256", model.get("sha256") or "n/a"),
        ("hardware", _hardware(env)),
        ("date", str(env.get("started_at", "not recorded"))),
        ("run", f"{folder.run_id}, params {env.get('params_file', '?')}"),
        ("git commit", _commit(env)),
        ("libraries", libs or "not recorded"),
    ]
    opt: Mapping[str, Any] = optimized or {}
    chosen = opt.get("chosen")
    if chosen:
        cand: Mapping[str, Any] = next(
            (c for c in opt["candidates"] if c["status"] == "chosen"), {}
        )
        ref = opt["reference"]
        lat, ref_lat = cand.get("latency_ms") or {}, ref.get("latency_ms") or {}
        rows.append(
            (
                "chosen engine",
                f"{chosen['label']}: {chosen['speedup_vs_reference']:.2f}x {ref['label']} at "
                f"batch {opt['batch_size']}{_ci_text(chosen)} "
                f"({lat.get('median', 0):.0f} ms against {ref_lat.get('median', 0):.0f} ms)",
            )
        )
        memory = (cand.get("peak_memory") or {}).get("peak_memory_mb")
        if memory is not None:
            kind = (cand.get("peak_memory") or {}).get("memory_kind", "")
            rows.append(("peak memory", f"{memory:.0f} MB ({kind}, the chosen engine's process)"))
    elif optimized:
        rows.append(("chosen engine", "none: no candidate passed every gate"))
    aligned = _alignment_line(folder.read("alignment", required=False))
    if aligned:
        rows.append(aligned)
    switching = _reenrolment_line(
        folder.read("scale", required=False), folder.read("verification", required=False)
    )
    if switching:
        rows.append(switching)
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="headline">{body}</table>' + _verdict_summary(verdict)


def _verdict_summary(verdict: Mapping[str, Any] | None) -> str:
    """The verdict, then each failed check in one sentence and each n/a reason once."""
    if not verdict:
        return ""
    ok = verdict["passed"]
    checks = verdict["checks"]
    failed = [c for c in checks if c["status"] == "FAIL"]
    not_applicable: dict[str, list[str]] = {}
    for c in checks:
        if c["status"] == "n/a":
            not_applicable.setdefault(c.get("note", ""), []).append(c["metric"])
    passed = sum(c["status"] == "pass" for c in checks)
    counts = f"{passed} passed, {len(failed)} failed, {sum(map(len, not_applicable.values()))} n/a"
    items = [
        f'<li><span class="fail">FAIL</span> {html.escape(_one_sentence(c))}</li>' for c in failed
    ]
    items += [
        f'<li><span class="na">n/a</span> {html.escape(", ".join(metrics))}: '
        f"{html.escape(reason or 'not applicable here')}</li>"
        for reason, metrics in not_applicable.items()
    ]
    return (
        f'<p class="banner {"bp" if ok else "bf"}">Verdict: '
        f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span> '
        f"({counts} of {len(checks)} checks)</p>" + (f"<ul>{''.join(items)}</ul>" if items else "")
    )


def _nav(rendered: Mapping[str, Any] | None) -> str:
    """Links to the sections, the notebook pages, the acceptance matrix and the JSON."""
    links = [("#acceptance", "acceptance")]
    for nb in (rendered or {}).get("notebooks", ()):
        if nb.get("html"):
            links.append((nb["html"], nb["name"]))
    links += [(MATRIX_FILE, "acceptance matrix"), ("verdict.json", "verdict.json")]
    return (
        "<nav>"
        + "".join(f'<a href="{html.escape(h)}">{html.escape(t)}</a>' for h, t in links)
        + "</nav>"
    )


def _failure(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    return (
        f'<p class="banner bf">The run FAILED: {html.escape(error["error"])}</p>'
        f"<details><summary>traceback</summary>"
        f"<pre>{html.escape(error.get('traceback', ''))}</pre></details>"
    )


def _verdict(verdict: Mapping[str, Any] | None, matrix: MatrixRow | None) -> str:
    if not verdict:
        return ""
    hw = verdict.get("hardware_class")
    note = verdict.get("target_note")
    row = ""
    if matrix is not None:
        row = (
            f"<h3>Acceptance-matrix row (<a href='{MATRIX_FILE}'>{MATRIX_FILE}</a>)</h3>"
            + _table(Table(COLUMNS, [list(matrix.cells)]))
        )
    return (
        "<h2 id='acceptance'>Acceptance</h2>"
        + (f"<p>Hardware class: <code>{html.escape(hw)}</code></p>" if hw else "")
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + _table(tables.checks(verdict))
        + row
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
            f" at batch {optimized['batch_size']}{html.escape(_ci_text(chosen))}, the fastest of "
            "the candidates that passed every gate."
        )
    else:
        what = '<span class="fail">No candidate passed every gate.</span>'
    injected = " (injected)" if host.get("injected") else ""
    spent = _section(
        "Where the run's minutes went",
        tables.minutes(optimized),
        "Seconds per candidate and phase: start (the worker's interpreter and imports, and "
        "what follows its own phases), prepare (the model), convert (ncnn, MNN), calibrate "
        "and search (INT8: calibration; the gates of both ends, the sensitivity and the "
        "selection), build (the rest of the engine's creation), probe (a candidate that may "
        "not win), embed (every face and pair), time, gate. A cell is empty where the phase "
        "did not happen; the store's artifacts leave convert, calibrate and search empty.",
    )
    head = f"<h2>Optimize on {html.escape(host['class'])}{injected}</h2><p>{what}</p>"
    return head + _table(tables.candidates(optimized)) + spent


def _section(title: str, table: Table, intro: str = "") -> str:
    """A heading and its table; nothing when the table has no rows."""
    if not table.rows:
        return ""
    return f"<h2>{html.escape(title)}</h2>" + (f"<p>{intro}</p>" if intro else "") + _table(table)


def _far_note(ver: Mapping[str, Any]) -> str:
    """Which FAR the TAR columns were asked at, and whether the pair count can reach it."""
    engines = ver.get("engines") or {}
    if not engines:
        return ""
    tar = next(iter(engines.values()))["reference"]["tar_at_far"]
    far, lowest = tar.get("far"), tables.lowest_far(ver)
    if far is None or lowest is None:
        return ""
    measured = tar.get("far_measured")
    test = f"; FAR measured on the test folds {measured:.3g}" if measured is not None else ""
    if lowest <= far:
        return f"TAR at FAR {far:g} (insightface's 10-fold protocol{test})."
    return (
        f"TAR at FAR {far:g} asked, but {round(1 / lowest)} impostor pairs cannot measure a "
        f"FAR below {lowest:.3g} (one false accept): read the TAR columns as the rate at a "
        f"threshold that accepted no training impostor{test}."
    )


def _verification(ver: Mapping[str, Any]) -> str:
    kind = ver.get("data_kind", "?")
    note = (
        " (synthetic pairs: not real faces, accuracy means nothing)" if kind == "synthetic" else ""
    )
    label = f"real faces, {ver.get('pairs', 0)} pairs" if kind == "real" else None
    title = f"Verification: {label or str(ver.get('pairs', 0)) + ' pairs, ' + kind}{note}"
    parts = [_section(title, tables.verification(ver), html.escape(_far_note(ver)))]
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


def _scale(scale: Mapping[str, Any] | None) -> str:
    """The scale section: throughput and memory, the low-FAR table, 1:N; or why it is absent."""
    if not scale:
        return ""
    if "skipped" in scale:
        return f"<h2>At scale</h2><p>Not measured: {html.escape(str(scale['skipped']))}.</p>"
    intro = html.escape(
        f"{scale['faces']} faces, {scale['identities']} identities ({scale['source']}; "
        "synthetic: the TAR identifies nothing, the deltas and flips say whether the engine "
        f"is still the reference). Lowest per-face cosine {scale['cosine_min']:.6f}."
    )
    return "".join(
        [
            _section("At scale: throughput and memory", tables.scale_throughput(scale), intro),
            _section(
                "At scale: all-pairs verification (TAR at FAR)",
                tables.scale_low_far(scale),
                "Every pair of the set; the threshold at each FAR is the reference's, and a "
                "flip is a pair the engine decides the other way at it.",
            ),
            _section("At scale: 1:N identification", tables.scale_identification(scale)),
        ]
    )


def _reenrolment_block(
    scale: Mapping[str, Any] | None, verification: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any] | None, str]:
    """The re-enrolment verdict a run has, and what it was judged on: the scale section's
    labelled set, else the run's verification pairs."""
    if scale and scale.get("reenrolment"):
        return scale["reenrolment"], f"the scale section's {scale.get('faces')} labelled faces"
    pairs = (verification or {}).get("switching") or {}
    if verification and pairs.get("reenrolment"):
        return pairs["reenrolment"], f"the run's {verification.get('pairs')} verification pairs"
    return None, ""


def _switching(scale: Mapping[str, Any] | None, verification: Mapping[str, Any] | None) -> str:
    """Switching from the reference to this engine: the re-enrolment verdict, its points
    and the TAR-FAR picture of reference, engine and mixed (the picture and the storage
    table need the scale section)."""
    from arcface_lab.report.figures import switching_png

    block, judged_on = _reenrolment_block(scale, verification)
    if not block:
        return ""
    intro = (
        f"{block['reason']} A gallery enrolled with the reference is compared with this "
        f"engine's probes and judged at the reference's own operating thresholds (params "
        f"reenrolment), on {judged_on}."
    )
    png = switching_png(scale or {})
    figure = (
        f'<figure class="switching"><img alt="TAR against FAR: reference, engine, mixed" '
        f'src="data:image/png;base64,{png}"></figure>'
        if png
        else ""
    )
    storage = (scale or {}).get("gallery_storage")
    stored = (
        _section(
            "What storing the gallery costs",
            tables.gallery_storage(storage),
            f"The chosen engine's {storage['faces']} embeddings with the gallery stored "
            "compressed and the probes in float32, judged at float32's thresholds (params "
            "scale.gallery_storage; the operating points of reenrolment).",
        )
        if storage
        else ""
    )
    return (
        _section("Switching from the reference to this engine", tables.reenrolment(block), intro)
        + figure
        + stored
    )


def _reenrolment_line(
    scale: Mapping[str, Any] | None, verification: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """The headline's row for the re-enrolment verdict (None without one)."""
    block, judged_on = _reenrolment_block(scale, verification)
    if not block:
        return None
    return ("gallery re-enrolment", f"{block['reason']} (on {judged_on})")


def _alignment(alignment: Mapping[str, Any] | None) -> str:
    """How steady the run's real faces are: each crop aligned again (absent: no photos)."""
    if not alignment:
        return ""
    check = alignment.get("realign") or {}
    found = alignment.get("faces_per_photo") or {}
    per_photo = ", ".join(f"{Path(p).name} {n}" for p, n in found.items())
    verdict = "meets" if check.get("passed") else "misses"
    misses = "; ".join(check.get("misses") or [])
    intro = (
        f"Every face the run found in its photos ({per_photo}) was aligned again by the same "
        f"detector ({check.get('detector', '?')}): a crop already on the template should give "
        f"its five points back. This {verdict} the targets (params faces.realign)"
        + (f": {misses}" if misses else "")
        + ". Drift here is the alignment's, not an engine's; every real-face figure above "
        "stands on these crops."
    )
    return _section("How steady the faces are", tables.realignment(alignment), intro)


def _alignment_line(alignment: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """The headline's row for the alignment check (None without real faces)."""
    if not alignment:
        return None
    c = alignment.get("realign") or {}

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    return (
        "face alignment",
        f"{'steady' if c.get('passed') else 'NOT steady'}: {c.get('faces')} crops aligned "
        f"again by {c.get('detector')}, {c.get('lost')} lost, landmarks "
        f"{fmt(c.get('px_median'), '.2f')} px median / {fmt(c.get('px_max'), '.2f')} px max "
        f"from where the first alignment put them, embedding cosine min "
        f"{fmt(c.get('cosine_min'), '.4f')}",
    )


def _worst_faces(drift: Mapping[str, Any]) -> str:
    """Thumbnails of the faces that drifted most, with each engine's cosine on them."""
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
        f"<h2>Worst-drift faces ({html.escape(str(drift.get('data_kind', 'faces')))}, "
        f"{drift.get('images', 0)} validation faces)</h2>"
        f"<p>Each engine's lowest per-face cosines against the reference ({len(thumbs)} "
        "faces).</p>"
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
    matrix = matrix_row(folder.path)
    verdict_word = (
        "FAILED RUN"
        if run["error"]
        else ("PASS" if (run["verdict"] or {}).get("passed") else "FAIL")
    )
    title = f"{env['model']['spec']} on {env.get('hardware_class', '?')}: {verdict_word}"
    parts = [
        _nav(run["notebooks"]),
        f"<h1>{html.escape(title)}</h1>",
        _headline(folder, env, run["verdict"], optimized),
        _frontier(env, optimized),
        _failure(run["error"]),
        _verdict(run["verdict"], matrix),
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
        _scale(folder.read("scale", required=False)),
        _switching(
            folder.read("scale", required=False), folder.read("verification", required=False)
        ),
        _alignment(folder.read("alignment", required=False)),
        _environment(env),
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>arcface_lab: "
        f"{html.escape(title)} ({html.escape(folder.run_id)})</title><style>{_CSS}</style>"
        f"</head><body>{''.join(parts)}</body></html>\n"
    )
    write_text_atomic(folder.path / MATRIX_FILE, "# Acceptance matrix\n\n" + to_markdown([matrix]))
    out = folder.path / "index.html"
    write_text_atomic(out, page)
    return out


def _ci_text(candidate: Mapping[str, Any]) -> str:
    """`` (95 % interval [lo, hi], n / m repeats)`` for a speedup, or nothing."""
    ci = format_interval(candidate.get("speedup_ci"))
    if ci is None:
        return ""
    counts = tables.repeats(candidate.get("repeats"))
    return f" (95 % interval {ci}" + (f", {counts} repeats)" if counts else ")")


def _frontier(env: Mapping[str, Any], optimized: Mapping[str, Any] | None) -> str:
    """The candidates as points, speedup against worst held-out cosine (report/figures.py)."""
    from arcface_lab.config.params import Params
    from arcface_lab.errors import ParamsError
    from arcface_lab.report.figures import frontier_png

    if not optimized:
        return ""
    raw = env.get("params") or {}
    gates = dict((raw.get("thresholds") or {}).get("cosine_min") or {})
    target, label = None, ""
    try:
        found = Params.from_mapping(raw, "environment.json").thresholds.speed_target(
            str(env.get("hardware_class", ""))
        )
    except ParamsError:  # a run folder written by an older version: gates only
        found = None
    if found is not None:
        target, label = found[1].speedup_min, f"({found[0]})"
    png = frontier_png(optimized, gates, target, label)
    if png is None:
        return ""
    return (
        '<figure class="frontier"><img alt="speedup against worst held-out cosine, one point '
        f'per candidate" src="data:image/png;base64,{png}"><figcaption>Each candidate that '
        "ran: speedup with its 95 % interval against 1 - worst held-out cosine; the dashed "
        "lines are the cosine gates, the dotted one the speed target.</figcaption></figure>"
    )
