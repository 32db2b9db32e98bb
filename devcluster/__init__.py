"""Local Kubernetes for tests and the demo: real control plane + node simulator.

Dev/test tooling only; nothing here ships in the operator image.
"""
