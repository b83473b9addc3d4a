"""Dense vs gathered top-k MoE dispatch, forward + backward of one MoE block.

  python -m norface_jax.benchmark.moe_dispatch --tokens=4096 --width=384 --experts=4 --top_k=2

Dense runs every expert on every token and zeroes the non-selected gates (m/k times
the expert FLOPs, one big einsum); gather sorts token-expert pairs by expert and runs
`jax.lax.ragged_dot` (k/m of the FLOPs, more data movement). In F_cla the MoE blocks
see pooled features (one token per image), where either is negligible next to the ViT.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from norface_jax.benchmark.common import median_rate
from norface_jax.models.moe import MoEBlock


def tokens_per_sec(dispatch: str, tokens: int, width: int, experts: int, top_k: int,
                   dtype: str) -> float:
  block = MoEBlock(num_experts=experts, top_k=top_k, dispatch=dispatch, dtype=jnp.dtype(dtype))
  x = jax.random.normal(jax.random.key(0), (tokens, width), jnp.float32)
  params = block.init({"params": jax.random.key(1)}, x, train=False)["params"]
  # Non-degenerate routing: random router weights.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: jax.random.normal(jax.random.key(2), v.shape) * 0.1
      if "router" in jax.tree_util.keystr(p) else v, params)

  @jax.jit
  def step(params, x):
    def loss(p):
      y, _ = block.apply({"params": p}, x, train=True, rngs={"router": jax.random.key(3)})
      return jnp.mean(y.astype(jnp.float32) ** 2)
    return jax.grad(loss)(params)

  out = {}
  def run():
    out["g"] = step(params, x)
  return median_rate(run, lambda: jax.block_until_ready(out["g"]), batch=tokens)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=4096)
  parser.add_argument("--width", type=int, default=384)
  parser.add_argument("--experts", type=int, default=4)
  parser.add_argument("--top_k", type=int, default=2)
  parser.add_argument("--dtype", default="float32")
  a = parser.parse_args()
  dev = jax.devices()[0]
  print(f"MoE block fwd+bwd, T={a.tokens} D={a.width} m={a.experts} k={a.top_k} {a.dtype} "
        f"on {dev.platform}:{dev.device_kind}")
  print("| dispatch | tokens/s |\n| --- | --- |")
  for dispatch in ("dense", "gather"):
    rate = tokens_per_sec(dispatch, a.tokens, a.width, a.experts, a.top_k, a.dtype)
    print(f"| {dispatch} | {rate:.0f} |")


if __name__ == "__main__":
  main()
