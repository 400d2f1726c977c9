"""``dose3d bench``: federated vs central vs local-only training, orchestration overhead, data pipeline and
weight exchange, measured side by side on the same synthetic non-IID sites (``benchmarks/`` holds the
runner script and the results).
"""
