"""Latency lookup tables: ``table`` (pure: keys, predictor, calibration) and ``measure`` (torch timing)."""
