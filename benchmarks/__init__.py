"""`make bench`: Shadowline's shadow proxy measured against direct access and nginx `mirror`.

Run `benchmarks/run.py`; see `benchmarks/README.md`. The modules here are small and
importable so the unit tests can check the generated configuration and the arithmetic
without running anything.
"""
