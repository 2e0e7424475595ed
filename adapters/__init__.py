"""loramux.adapters: the adapter registry (manifests, stores, validation, merge), and what every
command shares: typed errors, logging, the one CLI error printer (cli_errors.py).

Imports neither `loramux.server` nor `loramux.trainer`, and no heavy library at import time.
"""
