"""Features, training and artefacts for the learned anomaly score (not built yet: see the issues)."""
