"""Side-by-side benchmarks of rungflow, Ray Tune, Optuna and Syne Tune (see run.py)."""
