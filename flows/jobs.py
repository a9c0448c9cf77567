"""The Schedy-style job API (public import path kept for users).

``from flows.jobs import Experiment`` keeps working; the implementation lives
in :mod:`flows.engine.jobs`.
"""

from flows.engine.jobs import *  # noqa: F403
from flows.engine.jobs import __all__ as __all__
