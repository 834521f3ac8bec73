"""Peak RSS of a streaming `embed --out FOLDER` at two input sizes (issue 15's memory check).

Each size runs in a fresh process (``ru_maxrss`` is a process's lifetime peak) through
the tiny ONNX model of the tests, so the images, not the network, dominate the work.
Prints one JSON object: per run the faces, peak RSS, images/s, and the ratio of the two
peaks (bounded memory: close to 1 however large the input).

    .venv/bin/python scripts/stream_memory.py --sizes 10000,100000 [--npy]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny_model import write_tiny_onnx  # noqa: E402


def _run(model: Path, source: str, out: Path) -> dict[str, object]:
    info = out.with_suffix(".json")
    cmd = [
        sys.executable, "-m", "arcface_lab.cli", "embed", "--model", str(model),
        "--backend", "onnxruntime", "--strict", "--input", source, "--out", str(out),
        "--quiet", "--info-json", str(info), "--cache-dir", str(out.parent / "cache"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT)
    result = json.loads(info.read_text())
    return {k: result[k] for k in ("faces", "peak_rss_mb", "images_per_s", "seconds")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--npy", action="store_true", help="also stream each size from a .npy")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="stream-memory-") as tmp:
        folder = Path(tmp)
        model = write_tiny_onnx(folder / "tiny.onnx")
        for n in sizes:
            runs.append(
                {"input": f"synthetic:{n}", **_run(model, f"synthetic:{n}", folder / f"s{n}")}
            )
            if args.npy:
                import numpy as np

                from arcface_lab.data.stream import open_source

                path = folder / f"faces{n}.npy"
                source = open_source(f"synthetic:{n}")
                array = np.lib.format.open_memmap(path, "w+", np.uint8, (n, 112, 112, 3))
                for s in range(0, n, 1024):
                    array[s : s + 1024] = source.read(s, min(s + 1024, n))
                array.flush()
                del array
                runs.append(
                    {"input": f"faces.npy ({n})", **_run(model, str(path), folder / f"n{n}")}
                )
                path.unlink()
    peaks = [float(r["peak_rss_mb"]) for r in runs if str(r["input"]).startswith("synthetic")]
    print(json.dumps({"runs": runs, "peak_ratio_largest_to_smallest": peaks[-1] / peaks[0]},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
