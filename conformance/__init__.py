"""Conformance: every estimator on every backend against the float64 reference and TorchRL."""
