"""Builds kernels._native (the C++ attention kernel); pyproject.toml holds the metadata.

Flags: -O3 for baseline x86-64, never -march=native (the wheel must run on any x86-64; the
AVX-512 functions carry their own target attributes and are chosen at run time).
"""

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "kernels._native",
            ["kernels/paged_attention.cpp"],
            cxx_std=17,
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ],
    cmdclass={"build_ext": build_ext},
)
