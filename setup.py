"""Build of apl's compiled kernels against the torch that is already installed.

    pip install --no-build-isolation .        # or -e . for development

The CPU extension is always built. The CUDA kernels are added when torch has CUDA and nvcc is
found; set APL_CPU_ONLY=1 to skip them. GPU architectures: those of the GPUs visible at build
time, else a default list with +PTX (apl/ops/cuda_arch.py); APL_CUDA_ARCH or TORCH_CUDA_ARCH_LIST
(e.g. "8.0;9.0") overrides.
"""
import glob
import importlib.util
import os
import subprocess
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # the extension is built against the installed torch: say so plainly
    sys.stderr.write(
        f"apl setup.py: PyTorch is needed to build apl's kernels, but importing it failed ({exc}).\n"
        "Install torch first, then build apl against it without build isolation:\n"
        "  CPU only:  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu\n"
        "  CUDA:      pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/<cuda tag>"
        " (the tag of your CUDA version: see https://pytorch.org/get-started/locally/)\n"
        "  then:      pip install --no-build-isolation -e .   (or run ./install.sh)\n"
    )
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_arch_module():
    """apl/ops/cuda_arch.py by path: importing the apl package would need the extension being built."""
    spec = importlib.util.spec_from_file_location("apl_arch", os.path.join(HERE, "apl", "ops", "cuda_arch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arch_list() -> str:
    arch = _load_arch_module()
    visible = []
    if torch.cuda.is_available():
        visible = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    nvcc = None
    try:
        out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
        nvcc = arch.parse_nvcc_version(out)
    except (OSError, subprocess.SubprocessError):
        pass
    override = os.environ.get("APL_CUDA_ARCH") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    return arch.cuda_arch_list(visible, nvcc, override)


def _want_cuda() -> bool:
    if os.environ.get("APL_CPU_ONLY", "0") not in ("", "0"):
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None


def _extension():
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++17"]
    link = []
    if torch.backends.openmp.is_available():
        # ATen's parallel_for is an inline `omp parallel`: without -fopenmp it would run serially.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if _want_cuda():
        os.environ["TORCH_CUDA_ARCH_LIST"] = _arch_list()
        print(f"apl setup.py: building the CUDA kernels for {os.environ['TORCH_CUDA_ARCH_LIST']}", flush=True)
        return CUDAExtension(
            "apl._C",
            sources + rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu"),
            define_macros=[("APL_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-fmad=false"]},
            extra_link_args=link,
        )
    return CppExtension("apl._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
