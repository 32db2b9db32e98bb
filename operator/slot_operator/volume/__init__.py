"""Commands that run in pods on a slot's volume: the ownership audit and the ownership migration.

They run from the operator's own image (`slot-operator audit`, `slot-operator migrate-ownership`),
look at file metadata only (lstat, directory listings, lchown), never open a file, never follow a
symlink and never leave the volume's filesystem. Their report is one JSON line in the container's
termination message, read by the operator (logic/ownership.py; docs/design.md §2.4).
"""
