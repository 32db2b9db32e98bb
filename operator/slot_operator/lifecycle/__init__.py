"""kopf wiring: importing this package registers the handlers with kopf's default registry."""

from slot_operator.handlers import health, startup

__all__ = ["health", "startup"]
