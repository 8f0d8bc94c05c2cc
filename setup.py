"""Builds the store's compiled planner (store/_planner.c) in place: `make setup` runs it."""

from setuptools import Extension, setup

setup(
    name="fulfillment-sentinel",
    packages=[],
    ext_modules=[Extension("store._planner", ["store/_planner.c"], extra_compile_args=["-O2", "-Wall"])],
)
