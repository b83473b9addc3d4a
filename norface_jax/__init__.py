"""norface_jax: identity-normalized facial expression analysis (Norface, DeepFN) in JAX/Flax."""

__version__ = "0.1.0"
