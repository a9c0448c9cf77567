"""Pure benchmark objectives registered as trainables.

``synthetic`` is the multi-fidelity benchmark with crossing learning curves and a
known optimum (:mod:`examples.synthetic`); ``pbt-toy`` is the Jaderberg et al.
toy problem (:mod:`examples.pbt_toy`). Both run in simulation and in real flows.
"""

from __future__ import annotations

from examples import pbt_toy, synthetic
from flows.trainable import objective_trainable, register_trainable

train_synthetic = register_trainable("synthetic", objective_trainable(synthetic.objective))
train_pbt_toy = register_trainable("pbt-toy", objective_trainable(pbt_toy.objective))
