"""Loss modules and value estimators (``arrayrl.objectives.value``)."""
