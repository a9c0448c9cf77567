"""Interoperability with other tools: Optuna export and warm starts from
Optuna studies or earlier experiments."""
