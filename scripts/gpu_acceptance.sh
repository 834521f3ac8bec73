#!/usr/bin/env bash
# GPU acceptance run on a lent GPU machine, from a source checkout, with that machine's own python3.
#
# Needs: nvidia-smi; python3 with numpy, pyyaml and a CUDA build of torch. Used when present
# (each missing one is reported, never installed; there is no internet): onnx and filelock
# (the onnxruntime and tensorrt backends export the model to ONNX and cache engines),
# onnxruntime-gpu, onnxconverter-common (ORT fp16; TensorRT >= 11 fp16), tensorrt, pytest.
# No papermill: the run writes JSON and index.html (--no-render); `arcface-lab render` makes
# the notebook pages elsewhere from the packed run folder ($OUT/gpu-run.tar.gz).
#
# Environment:
#   OUT      where results go (default: reports); the run folder is $OUT/gpu-run
#   PARAMS   params file (default: params/gpu.yaml)
#   CHAIN    optional backend chain overriding the params file's, e.g.
#            tensorrt,torch_fast,onnxruntime,torch (written to $OUT/params-gpu-chain.yaml)
#   XDG_CACHE_HOME  model/engine cache (default: /tmp/arcface_lab-cache, kept out of $OUT)
#
# Exit status: that of `arcface_lab run` (0 pass, 3 a threshold missed, 1/2 errors);
# 4 when a required module is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-reports}"
PARAMS="${PARAMS:-params/gpu.yaml}"
RUN_DIR="$OUT/gpu-run"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/arcface_lab-cache}"
mkdir -p "$OUT"

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi | tee "$OUT/nvidia-smi.txt"
else
    echo "nvidia-smi not found: this does not look like a GPU machine" | tee "$OUT/nvidia-smi.txt"
fi

echo "== python3 and modules"
python3 - <<'PY' | tee "$OUT/python-env.txt"
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
required = ["numpy", "yaml", "torch"]
optional = ["onnx", "filelock", "onnxruntime", "onnxconverter_common", "tensorrt", "pynvml", "pytest", "PIL"]
missing = []
for name in required + optional:
    try:
        mod = importlib.import_module(name)
        print(f"  {name:<22} {getattr(mod, '__version__', 'present')}")
    except Exception as exc:  # ImportError, or a library that fails to load
        print(f"  {name:<22} MISSING ({type(exc).__name__}: {exc})")
        if name in required:
            missing.append(name)
if "torch" not in missing:
    import torch

    print("  torch.cuda", torch.version.cuda, "available:", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("  gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
if missing:
    print("MISSING REQUIRED:", " ".join(missing))
PY
if grep -q "^MISSING REQUIRED" "$OUT/python-env.txt"; then
    echo "required modules are missing (see above); nothing was run" >&2
    exit 4
fi

echo "== backends"
python3 -m arcface_lab backends | tee "$OUT/backends.txt"

if [[ -n "${CHAIN:-}" ]]; then
    derived="$OUT/params-gpu-chain.yaml"
    python3 - "$PARAMS" "$derived" "$CHAIN" <<'PY'
import sys, yaml
src, dest, chain = sys.argv[1:]
with open(src) as f:
    params = yaml.safe_load(f)
params.setdefault("backends", {})["chain"] = [c.strip() for c in chain.split(",") if c.strip()]
with open(dest, "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
print(f"chain {params['backends']['chain']} -> {dest}")
PY
    PARAMS="$derived"
fi

echo "== run $PARAMS -> $RUN_DIR"
rm -rf "$RUN_DIR" "$OUT/.gpu-run.partial" "$RUN_DIR.failed"
status=0
python3 -m arcface_lab -v run "$PARAMS" --out "$RUN_DIR" --no-render 2>&1 | tee "$OUT/run.log" \
    || status=$?
# pipefail: the pipeline's status is python's unless tee itself failed
if [[ $status -eq 0 && ! -d "$RUN_DIR" ]]; then
    status=1
fi

if python3 -c "import pytest, onnx" >/dev/null 2>&1; then
    echo "== GPU tests (pytest -m gpu)"
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_tensorrt.py tests/test_torch_fast.py \
        2>&1 | tee "$OUT/pytest-gpu.log" || echo "GPU tests failed (see $OUT/pytest-gpu.log)"
fi

# The device tool brings back at most 8 files: pack the run folder (render it here with
# `arcface-lab render`) and keep the logs beside it.
for dir in "$RUN_DIR" "$RUN_DIR.failed"; do
    if [[ -d "$dir" ]]; then
        tar -czf "$OUT/$(basename "$dir").tar.gz" -C "$(dirname "$dir")" "$(basename "$dir")"
    fi
done
echo "== done: run status $status; run folder: $(ls -d "$RUN_DIR" "$RUN_DIR.failed" 2>/dev/null | head -1)"
exit "$status"
