"""loramux.trainer: turns a tenant's data into a checked, registered adapter."""
