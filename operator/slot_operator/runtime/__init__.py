"""The reconcile loop: a work queue of Slot keys, a global probe cap, and the steps joining logic to I/O."""
