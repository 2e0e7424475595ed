"""loramux.server: the OpenAI-compatible HTTP server over the engine seam."""
