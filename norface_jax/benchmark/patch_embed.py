"""The ViT patch embedding two ways: a strided P x P convolution (`vit.ViT`, timm's layout)
against reshaping the image into patches and one matmul, forward and backward.

  taskset -c 1 env XLA_FLAGS="--xla_force_host_platform_device_count=1 \
      --xla_cpu_multi_thread_eigen=false" python -m norface_jax.benchmark.patch_embed

Both compute the same (B, N, D) tokens from the same kernel (checked); each line is the
median of 20 calls of the jitted gradient with respect to kernel and image.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

# (batch, image side, patch, width): stage 2 at S/16 and B/16, MAE's B/16 batch.
SHAPES = ((8, 224, 16, 384), (32, 224, 16, 768), (16, 256, 16, 768))


def conv(x, w):
  p = w.shape[0]
  y = jax.lax.conv_general_dilated(x, w, (p, p), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(x.shape[0], -1, w.shape[-1])


def reshape_dense(x, w):
  b, h, wd, c = x.shape
  p, d = w.shape[0], w.shape[-1]
  patches = x.reshape(b, h // p, p, wd // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return patches.reshape(b, (h // p) * (wd // p), p * p * c) @ w.reshape(p * p * c, d)


def median_ms(fn, *args, n: int = 20) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def main() -> None:
  rng = np.random.default_rng(0)
  print(f"device {jax.devices()[0].platform}; forward + backward (d kernel, d image)")
  print("| (batch, side, patch, width) | conv ms | reshape + dense ms |")
  print("| --- | --- | --- |")
  for b, s, p, d in SHAPES:
    x = jnp.asarray(rng.random((b, s, s, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(p, p, 3, d)) * 0.02, jnp.float32)
    np.testing.assert_allclose(conv(x, w), reshape_dense(x, w), rtol=1e-4, atol=1e-4)
    grads = [jax.jit(jax.grad(lambda w, x, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
             for f in (conv, reshape_dense)]
    print(f"| {(b, s, p, d)} | " + " | ".join(f"{median_ms(g, w, x):.1f}" for g in grads) + " |")


if __name__ == "__main__":
  main()
