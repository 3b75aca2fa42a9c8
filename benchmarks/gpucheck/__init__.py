"""benchmarks/gpu_check.py's parts: the runner (`runner`, pure), the run table (`table`), the
agreement test (`agreement`), what a check does in its process (`children`, `perf`) and the
carried wheels (`wheels`). docs/gpu-check.md describes the check for its users."""
