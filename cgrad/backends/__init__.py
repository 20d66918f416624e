"""Device backends (see cgrad/backends/xp.py)."""
