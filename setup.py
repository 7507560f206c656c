"""The one compiled part: PNG row unfiltering (worker/cityscapes/_unfilter.c); the rest of the
project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("worker.cityscapes._unfilter", ["worker/cityscapes/_unfilter.c"],
                             extra_compile_args=["-O3"])])
