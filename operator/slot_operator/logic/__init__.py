"""Pure decision code: no I/O, no clocks (``now`` is always passed in), no kopf."""
