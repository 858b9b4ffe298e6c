"""Where the CUDA C sources are: ``gpuconv/_cuda`` in a wheel (a link to ``kernels/`` in a
source checkout, so editable installs and PYTHONPATH checkouts find the same files)."""
from __future__ import annotations

from pathlib import Path


def cuda_source_dir() -> Path:
    """The folder that holds ``kernels/*.cu`` for this installation."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_cuda", here.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gpuconv's CUDA sources are missing: looked in {here / '_cuda'} "
                            f"and {here.parent / 'kernels'}")
