"""norface_jax: identity-normalized facial expression analysis (Norface, DeepFN) in JAX/Flax."""

from norface_jax import xla_cpu as _xla_cpu

_xla_cpu.apply()  # XLA:CPU's flag defaults, before any JAX backend starts.

__version__ = "0.1.0"
