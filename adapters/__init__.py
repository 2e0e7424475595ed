"""loramux.adapters: the adapter registry (manifests, stores, validation, merge).

Imports neither `loramux.server` nor `loramux.trainer`, and no heavy library at import time.
"""
