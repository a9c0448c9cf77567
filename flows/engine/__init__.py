"""The Prefect-free engine: the runner loop, claims and leases, retention,
retry, the job API and the read-side status views.

Nothing here imports Prefect (checked by import-linter): the Prefect shell in
:mod:`flows` drives it, and the job API runs it without Prefect at all.
"""
