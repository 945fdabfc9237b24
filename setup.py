"""Build of apl's compiled kernels against the torch that is already installed.

    pip install --no-build-isolation .        # or -e . for development

The CPU extension is always built. The CUDA kernels are added when torch is a CUDA build and a
CUDA toolkit is found (apl/toolchain/cuda_toolkit.py: $CUDA_HOME, else torch's guess, where nvcc
really lives, /usr/local/cuda); set APL_CPU_ONLY=1 to skip them. GPU architectures: those of the
GPUs visible at build time, else a default list with +PTX (apl/toolchain/cuda_arch.py);
APL_CUDA_ARCH or TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0") overrides. The C++ standard is torch's
own choice (C++17 up to torch 2.13, C++20 from 2.14): the sources compile as either.
"""
import glob
import importlib.util
import os
import subprocess
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _toolchain(name):
    """apl/toolchain/NAME.py by path: importing the apl package would need the extension being built."""
    spec = importlib.util.spec_from_file_location(f"apl_toolchain_{name}", os.path.join(HERE, "apl", "toolchain", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def _fail(message):
    # One line that install.sh can find in the log (apl/toolchain/build_log.py), then the details.
    sys.stderr.write(f"apl setup.py: error: {message}\n")
    sys.exit(1)


try:
    import torch
except ImportError as exc:  # the extension is built against the installed torch: say so plainly
    sys.stderr.write(
        f"apl setup.py: error: PyTorch is needed to build apl's kernels, but importing it failed ({exc}).\n"
        "Install torch first, then build apl against it without build isolation:\n"
        "  CPU only:  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu\n"
        "  CUDA:      pip install torch --index-url https://download.pytorch.org/whl/<cuda tag>"
        " (the tag of your CUDA version: see https://pytorch.org/get-started/locally/)\n"
        "  then:      pip install --no-build-isolation -e .   (or run ./install.sh)\n"
    )
    sys.exit(1)


def _cuda_toolkit():
    """(CUDA_HOME to build with, or None; why not). Decided before torch.utils.cpp_extension is
    imported, because it reads $CUDA_HOME once, at import."""
    if os.environ.get("APL_CPU_ONLY", "0") not in ("", "0"):
        return None, "APL_CPU_ONLY is set"
    if torch.version.cuda is None:
        return None, f"torch {torch.__version__} is a CPU build"
    finder = _toolchain("cuda_toolkit")
    # torch's own guess, made the way torch makes it, without importing cpp_extension yet.
    import shutil
    nvcc = shutil.which("nvcc")
    guess = os.path.dirname(os.path.dirname(nvcc)) if nvcc else "/usr/local/cuda"
    try:
        found = finder.find_cuda_home(guess, torch.version.cuda)
    except finder.CudaHomeError as exc:
        _fail(str(exc))
    return found.home, found.reason


CUDA_HOME_FOUND, NO_CUDA_REASON = _cuda_toolkit()
if CUDA_HOME_FOUND:
    os.environ["CUDA_HOME"] = CUDA_HOME_FOUND

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _arch_list() -> str:
    arch = _toolchain("cuda_arch")
    visible = []
    if torch.cuda.is_available():
        visible = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    nvcc = None
    try:
        out = subprocess.run([os.path.join(CUDA_HOME_FOUND, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
        nvcc = arch.parse_nvcc_version(out)
    except (OSError, subprocess.SubprocessError):
        pass
    override = os.environ.get("APL_CUDA_ARCH") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    return arch.cuda_arch_list(visible, nvcc, override)


def _extension():
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # No -std: torch's build helpers add the standard its headers need.
    cxx = ["-O3"]
    link = []
    if torch.backends.openmp.is_available():
        # ATen's parallel_for is an inline `omp parallel`: without -fopenmp it would run serially.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if CUDA_HOME_FOUND:
        os.environ["TORCH_CUDA_ARCH_LIST"] = _arch_list()
        print(f"apl setup.py: building the CUDA kernels for {os.environ['TORCH_CUDA_ARCH_LIST']} "
              f"with the toolkit in {CUDA_HOME_FOUND}", flush=True)
        return CUDAExtension(
            "apl._C",
            sources + rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu"),
            define_macros=[("APL_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-fmad=false"]},
            extra_link_args=link,
        )
    if torch.version.cuda is not None:
        print(f"apl setup.py: CUDA kernels skipped: {NO_CUDA_REASON}; building the CPU kernels only", flush=True)
    return CppExtension("apl._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)


def _record_build(cuda_archs):
    """apl/_build.json: what this build holds and why the CUDA kernels are not in it, for
    `apl.available_backends()` and `apl selftest` to say at run time."""
    import json
    info = {"torch": torch.__version__, "cuda_kernels": bool(CUDA_HOME_FOUND), "cuda_home": CUDA_HOME_FOUND,
            "cuda_archs": cuda_archs, "why_no_cuda_kernels": None if CUDA_HOME_FOUND else NO_CUDA_REASON}
    with open(os.path.join(HERE, "apl", "_build.json"), "w") as f:
        json.dump(info, f, indent=1)


class _BuildExt(BuildExtension):
    """torch's BuildExtension with a build folder that outlives the build: pip gives every build a
    new temporary folder, so each `pip install -e .` recompiled everything. Objects are kept per
    torch release and CUDA setting in build/, and ninja recompiles only what changed."""

    def finalize_options(self):
        super().finalize_options()
        tag = f"{torch.__version__}-{'cuda' if CUDA_HOME_FOUND else 'cpu'}-py{sys.version_info[0]}{sys.version_info[1]}"
        self.build_temp = os.path.join(HERE, "build", f"temp-{tag}")


EXTENSION = _extension()
_record_build(os.environ.get("TORCH_CUDA_ARCH_LIST") if CUDA_HOME_FOUND else None)

setup(
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": _BuildExt.with_options(use_ninja=True)},
)
