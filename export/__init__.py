"""Checkout entry points of the deployment tools: ``python -m export.<name>`` from the repository root.

Each module is a thin shim that runs a ``main`` of :mod:`taidpt.export` or :mod:`taidpt.serve`; it is not
part of the pip package, where the same commands are the ``taidpt-*`` console scripts (the table in
docs/deployment.md). This package root imports nothing, so ``export.infer`` stays torch-free.
"""
