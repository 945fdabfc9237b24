"""What setup.py and install.sh need to build the extension, before apl can be imported: each
module imports the standard library only and is loaded by its path.

- `cuda_arch`: the GPU architectures to build the CUDA kernels for;
- `cuda_toolkit`: the CUDA toolkit to build them with, and why none was usable;
- `build_log`: the first compiler error of a failed build log.
"""
