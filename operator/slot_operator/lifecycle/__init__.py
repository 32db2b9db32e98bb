"""kopf wiring: importing this package registers the handlers with kopf's default registry."""

from slot_operator.lifecycle import health, startup

__all__ = ["health", "startup"]
