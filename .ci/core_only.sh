#!/usr/bin/env bash
# CI: the core install holds what pyproject.toml says it does. A venv with torch 2.13.0 (CPU) and numpy
# alone imports apl from this checkout (the extension leg 1 built), runs the three losses forward and
# backward, multistage and the evaluation metrics, and `apl selftest`; a part that needs an extra
# answers with the one line naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(mktemp -d)/venv
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet torch==2.13.0 numpy
export PYTHONPATH="$PWD"
"$VENV/bin/python" - <<'PY'
import importlib.util
import torch
import apl
from apl.multistage import multistage_step
from apl.evaluation import mean_average_precision
for extra_module in ("PIL", "matplotlib", "tqdm", "pytorch_metric_learning"):
    assert importlib.util.find_spec(extra_module) is None, f"{extra_module} is in the core-only venv"
assert apl.available_backends()["cpu"].available, apl.available_backends()["cpu"].reason
x = torch.nn.functional.normalize(torch.randn(64, 16), dim=1).requires_grad_()
y = torch.arange(64) % 8
for fn in (apl.ap_loss, apl.smooth_ap_loss, apl.recall_at_k_loss):
    fn(x, y).backward()
multistage_step(torch.nn.Linear(16, 8), x.detach(), y, apl.APLoss(), 16)
print("mAP", round(mean_average_precision(x.detach(), y), 4))
try:
    import apl.data
    raise SystemExit("apl.data imported without its extra")
except ImportError as err:
    assert "needs the extra apl[train]" in str(err), err
print("core-only: the losses, multistage and the metrics run on torch and numpy alone")
PY
"$VENV/bin/python" -m apl selftest --device cpu
out=$("$VENV/bin/python" -m apl train --epochs 1 2>&1 || true)
echo "$out" | grep -q "apl train: error: apl train needs the extra apl\[train\]" || { echo "$out"; exit 1; }
echo "core-only leg passed"
