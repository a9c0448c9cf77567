"""Serve the deployments of ``deployments/prefect.yaml`` without a work pool.

One long-running process registers the deployments with the Prefect API and
runs their flow runs (scheduled, or started from the UI) as subprocesses::

    python deployments/serve.py                 # all deployments in prefect.yaml
    python deployments/serve.py --only manual   # just some of them
    python deployments/serve.py --no-schedules  # every schedule registered paused
    python deployments/serve.py --file my.yaml  # another prefect.yaml

prefect.yaml is the single source of truth for names, schedules and default
parameters; this script only drops its work-pool settings, which ``serve``
does not use. Every schedule is registered as ``prefect deploy`` registers
it: ``active: false`` (``hourly-resume``) means registered *paused*, so it can
be resumed from the UI or with ``prefect deployment schedule resume``.
Storage comes from the serve process's ``RUNGFLOW_*`` settings. Run it from
the repository root (the flow runs load ``flows/tune.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PREFECT_YAML", "build_deployments", "load_deployment_configs", "main"]

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")


def load_deployment_configs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` entries of a prefect.yaml (YAML anchors resolved)."""
    data = yaml.safe_load(path.read_text())
    return list(data.get("deployments", []))


def build_deployments(
    only: list[str] | None = None, *, schedules: bool = True, path: Path = PREFECT_YAML
) -> list[Any]:
    """``tune.to_deployment(...)`` for each prefect.yaml deployment (or ``only`` these).

    Args:
        only: Deployment names to build (all when None).
        schedules: False registers every schedule paused (``active: false``);
            True keeps each schedule's ``active`` flag from prefect.yaml.
        path: The prefect.yaml.

    Raises:
        SystemExit: a name in ``only`` is not in prefect.yaml, or an entry does not
            deploy ``flows/tune.py:tune``.
    """
    from prefect.schedules import Cron

    from flows.tune import tune

    configs = load_deployment_configs(path)
    names = [c["name"] for c in configs]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SystemExit(f"--only {unknown} not in {path.name}; choose from {names}")
    out = []
    for config in configs:
        if only and config["name"] not in only:
            continue
        if config.get("entrypoint") != "flows/tune.py:tune":
            raise SystemExit(f"{config['name']}: entrypoint must be flows/tune.py:tune")
        crons = [
            Cron(
                s["cron"],
                timezone=s.get("timezone", "UTC"),
                active=bool(s.get("active", True)) and schedules,
            )
            for s in config.get("schedules") or []
        ]
        out.append(
            tune.to_deployment(
                name=config["name"],
                description=config.get("description"),
                tags=config.get("tags"),
                parameters=config.get("parameters") or {},
                schedules=crons,
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="Deployment name (repeatable).")
    parser.add_argument(
        "--no-schedules", action="store_true",
        help="Register every schedule paused (resume it in the UI to start it).",
    )
    parser.add_argument(
        "--file", type=Path, default=PREFECT_YAML, help="The prefect.yaml to serve."
    )
    parser.add_argument("--limit", type=int, default=None, help="Most concurrent flow runs.")
    args = parser.parse_args(argv)

    from prefect import serve

    deployments = build_deployments(args.only, schedules=not args.no_schedules, path=args.file)
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
