"""Per-feature HTTP routers."""
