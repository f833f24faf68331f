"""Distributions (filled in by the distributions work)."""
