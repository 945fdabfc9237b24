"""The core install (torch and numpy only) runs the losses, the ops, multistage, the distributed
helpers and the evaluation metrics; a part that needs an extra says in one line which one. The
extras' packages are hidden from a fresh interpreter here (CI also checks in a venv of torch and
numpy alone: .ci/core_only.sh)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDE = ("PIL", "matplotlib", "tqdm", "pytorch_metric_learning", "sklearn", "torchvision")

PRELUDE = textwrap.dedent(f"""
    import importlib.abc, sys
    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HIDE!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, _Hide())
    import importlib.util
    _find = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in {HIDE!r} else _find(name, *a)
""")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_core_runs_without_the_extras():
    r = _run("""
        import torch, apl
        from apl.multistage import multistage_step
        import apl.distributed, apl.memory
        from apl.evaluation import mean_average_precision, map_at_r
        x = torch.nn.functional.normalize(torch.randn(32, 8, dtype=torch.float64), dim=1).requires_grad_()
        y = torch.arange(32) % 4
        for fn in (apl.ap_loss, apl.smooth_ap_loss, apl.recall_at_k_loss):
            fn(x, y).backward()
        loss, _ = multistage_step(torch.nn.Linear(8, 4).double(), x.detach(), y, apl.APLoss(), 8)
        print(round(mean_average_precision(x.detach(), y), 6) >= 0, float(map_at_r(x.detach(), y)) >= 0)
        print(sorted(k for k in sys.modules if k.split(".")[0] in {"PIL", "matplotlib", "tqdm", "pytorch_metric_learning"}))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["True True", "[]"]


def test_a_part_that_needs_an_extra_says_which():
    r = _run("""
        for name in ("apl.data", "apl.train", "apl.plots", "apl.pml"):
            try:
                __import__(name)
            except ImportError as err:
                print(type(err).__name__, err)
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(l.startswith("MissingExtraError ") for l in lines)
    assert "apl.data needs the extra apl[train] (pillow, matplotlib, tqdm not installed)" in lines[0]
    assert "pip install --no-build-isolation -e '.[train]'" in lines[0]
    assert "apl.pml needs the extra apl[pml] (pytorch-metric-learning not installed)" in lines[3]


def test_the_commands_without_the_extras():
    """`apl selftest` works on the core; another command answers with one line naming the extra."""
    r = _run("""
        from apl.cli import main
        sys.exit(main(sys.argv[1:]))
    """, "selftest", "--device", "cpu")
    assert r.returncode == 0 and "apl selftest: cpu" in r.stdout, r.stderr
    r = _run("""
        from apl.cli import main
        sys.exit(main(sys.argv[1:]))
    """, "train", "--epochs", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[0]]
    assert "apl train: error: apl train needs the extra apl[train]" in r.stderr
