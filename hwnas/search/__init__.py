"""The search layer: problem, strategies (Optuna + pymoo + evolution), loop, reports. Never imports torch."""
