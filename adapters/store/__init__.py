"""Adapter stores: where published versions live (local filesystem, S3)."""
