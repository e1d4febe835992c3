"""Builds kvserve's two C++ kernels; pyproject.toml holds the metadata.

- kernels._native: the paged-attention kernel (kernels/paged_attention.cpp);
- kernels._logprobs: per-token log-probabilities with top-K (kernels/top_logprobs.cpp);
both include kernels/isa.h (which instruction-set path runs).

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
            depends=["kernels/isa.h"],
            cxx_std=17,
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
        ),
        Pybind11Extension(
            "kernels._logprobs",
            ["kernels/top_logprobs.cpp"],
            depends=["kernels/isa.h"],
            cxx_std=17,
            # no-trapping-math: lets GCC vectorise the portable path's selects (it changes no
            # result; nothing here reads the floating-point exception flags)
            extra_compile_args=["-O3", "-pthread", "-fno-trapping-math"],
            extra_link_args=["-pthread"],
        ),
    ],
    cmdclass={"build_ext": build_ext},
)
