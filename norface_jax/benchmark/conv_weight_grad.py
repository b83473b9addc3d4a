"""The 3x3 convolution weight gradient three ways on this device: XLA's own (the vjp of
`conv_general_dilated`), im2col (9 shifted copies, one matmul) and 9 shifted matmuls.

  taskset -c 1 env XLA_FLAGS="--xla_force_host_platform_device_count=1 \
      --xla_cpu_multi_thread_eigen=false" python -m norface_jax.benchmark.conv_weight_grad

The shapes are the stage-1 step's at the CPU size (batch 16, 64 px): the candidates for
a custom VJP (issue: the conv weight gradient dominates XLA:CPU's stage-1 step). Each
line is the median of 20 calls; all three give the same gradient (checked).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = ((16, 64, 3, 16), (16, 64, 16, 16), (16, 32, 16, 32), (16, 16, 32, 64), (16, 8, 64, 128))


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla(x, dy):
  w = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)
  return jax.vjp(lambda w: _conv(x, w), w)[1](dy)[0]


def _shifted(x):
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)]


def im2col(x, dy):
  cols = jnp.stack(_shifted(x), axis=3)  # (B, H, W, 9, Ci)
  return jnp.einsum("bhwkc,bhwo->kco", cols, dy).reshape(3, 3, x.shape[-1], dy.shape[-1])


def shifted_matmuls(x, dy):
  return jnp.stack([jnp.einsum("bhwc,bhwo->co", s, dy) for s in _shifted(x)]).reshape(
      3, 3, x.shape[-1], dy.shape[-1])


def median_ms(fn, *args, n: int = 20) -> float:
  fn(*args).block_until_ready()
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def main() -> None:
  rng = np.random.default_rng(0)
  print("| (batch, side, C_in, C_out) | XLA ms | im2col ms | 9 matmuls ms |")
  print("| --- | --- | --- | --- |")
  for b, h, ci, co in SHAPES:
    x = jnp.asarray(rng.random((b, h, h, ci)), jnp.float32)
    dy = jnp.asarray(rng.random((b, h, h, co)), jnp.float32)
    fns = [jax.jit(f) for f in (xla, im2col, shifted_matmuls)]
    ref = fns[0](x, dy)
    for f in fns[1:]:
      np.testing.assert_allclose(f(x, dy), ref, rtol=1e-3, atol=1e-2)
    print(f"| {(b, h, ci, co)} | " + " | ".join(f"{median_ms(f, x, dy):.2f}" for f in fns) + " |")


if __name__ == "__main__":
  main()
