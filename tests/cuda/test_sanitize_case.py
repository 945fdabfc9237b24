"""scripts/sanitize_case.py, the case that compute-sanitizer runs on a GPU, checked on the CPU: its
rank-surrogate part compares two backends correctly (here the CPU kernel against the reference), so
that on a GPU a failure means the CUDA kernel, not the script."""
import importlib.util
from pathlib import Path

from helpers import needs_cpu_kernel

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sanitize_case.py"


@needs_cpu_kernel
def test_rank_cases_run_and_compare_on_the_cpu():
    spec = importlib.util.spec_from_file_location("sanitize_case", SCRIPT)
    case = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(case)
    assert case.rank_cases("cpu", "torch", many_positives=False) == 12
