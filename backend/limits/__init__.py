"""Admission figures: queue state, position, ETA, Retry-After, and the slot reconciler."""
