"""losses: task losses (classification.py) and MoE router losses (moe.py)."""

from norface_jax.losses.classification import (l2_regression, sigmoid_bce,
                                               soft_ce, softmax_ce)
from norface_jax.losses.moe import (entropy, global_entropy_loss,
                                    importance_loss, local_entropy_loss)
