"""Prefect flows, tasks and the CLI: the thin orchestration shell around schedulers and storage."""
