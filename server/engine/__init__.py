"""The engine seam: the only place that imports vLLM."""
