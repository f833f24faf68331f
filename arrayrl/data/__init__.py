"""Batches of arrays: :class:`ArrayDict`, a TensorDict-lite for any Array API library."""
