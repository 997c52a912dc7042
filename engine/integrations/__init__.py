"""Adapters that plug an ``Embedder`` into the frameworks apps are built with (each in an extra)."""
