"""Internals shared by layercard and neuraltpp: atomic writes and the package-registry cache.

Nothing here imports either tool, so both can sit on top of it.
"""
