"""Runs gpuconv's CUDA C kernels on the CPU: a CuPy stand-in (``fake_cupy``) and the CUDA
runtime features the kernels use, for g++ (``emu.h``). See ``plugin.py``."""
