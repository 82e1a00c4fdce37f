"""MyCert's benchmarks: figures and their references, measured in one run.

``make benchmarks`` (``.venv/bin/python -m benchmarks.run``) writes docs/benchmarks.md,
docs/benchmarks.json and docs/benchmarks/*.png.
"""
