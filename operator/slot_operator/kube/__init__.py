"""All Kubernetes API I/O of the operator (kopf's own watches aside)."""
