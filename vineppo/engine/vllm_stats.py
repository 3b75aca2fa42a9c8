"""This engine's prefix-cache counters (queried / hit prompt tokens), for `EngineStats.extra`."""

from __future__ import annotations


class PrefixCacheCounter:
    """Counts one `vllm.LLM`'s prefix-cache queries/hits from the scheduler stats vLLM records each
    step (the source of get_metrics(); the Prometheus registry is process-global and only follows
    the newest engine when there are several). Falls back to get_metrics() where the hook is
    impossible."""

    def __init__(self, llm):
        self.llm = llm
        self.counts = [0, 0]
        self.hooked = self._hook()

    def _hook(self) -> bool:
        mgr = getattr(self.llm.llm_engine, "logger_manager", None)
        inner = getattr(mgr, "record", None)
        if inner is None:
            return False
        counts = self.counts

        def record(scheduler_stats=None, iteration_stats=None, *args, **kwargs):
            pcs = getattr(scheduler_stats, "prefix_cache_stats", None)
            if pcs is not None:
                counts[0] += int(getattr(pcs, "queries", 0) or 0)
                counts[1] += int(getattr(pcs, "hits", 0) or 0)
            return inner(scheduler_stats, iteration_stats, *args, **kwargs)

        mgr.record = record
        return True

    def totals(self) -> tuple[float, float]:
        """Cumulative (prefix-cache queried tokens, hit tokens) of this engine, or (0, 0)."""
        if self.hooked:
            return float(self.counts[0]), float(self.counts[1])
        try:
            metrics = self.llm.get_metrics()
        except Exception:
            return (0.0, 0.0)
        queries = hits = 0.0
        for m in metrics:
            if m.name == "vllm:prefix_cache_queries":
                queries += float(getattr(m, "value", 0) or 0)
            elif m.name == "vllm:prefix_cache_hits":
                hits += float(getattr(m, "value", 0) or 0)
        return queries, hits
