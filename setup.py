"""Build of apl's compiled kernels against the torch that is already installed.

    pip install --no-build-isolation .        # or -e . for development

The CPU extension is always built. The CUDA kernels are added when torch has CUDA and nvcc is
found; set APL_CPU_ONLY=1 to skip them. APL_CUDA_ARCH (e.g. "8.0;9.0") overrides the GPU archs.
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


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
        if "TORCH_CUDA_ARCH_LIST" not in os.environ:
            os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ.get("APL_CUDA_ARCH", "8.0;9.0")
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
