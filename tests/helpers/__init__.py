"""Helpers shared by the tests and benchmarks: object and operator builders, warehouses, subprocess harnesses."""
