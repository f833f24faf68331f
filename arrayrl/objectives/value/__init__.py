"""Value estimators. ``functional`` holds the estimator functions; the estimator classes
(GAE, TD0Estimator, ...) arrive with the loss modules."""
