"""The compiled parts of the import's hot path (worker/cityscapes/*.c): PNG row unfiltering, runs
of equal value, outer borders and the verification redraw; the rest of the project's metadata is in
pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension(f"worker.cityscapes.{name}", [f"worker/cityscapes/{name}.c"],
              depends=["worker/cityscapes/_buffers.h"], extra_compile_args=["-O3"])
    for name in ("_unfilter", "_runs", "_fill", "_trace")
])
