"""The 2D-FAN landmark detector of the `face-alignment` package, in Flax, for L_lm.

Layout of 1adrianb/face-alignment's `FAN(num_modules)` (2DFAN-4: 4 stacks), module
names as its state_dict with `.N` indices joined by `_` (`conv2.downsample.0` ->
`conv2/downsample_0`):
- stem: `conv1` (7x7/2, bias) + `bn1` + ReLU, `conv2` ConvBlock(64, 128), 2x2 average
  pool, `conv3` ConvBlock(128, 128), `conv4` ConvBlock(128, 256);
- per stack i: `m{i}` HourGlass of depth 4 (`b1_{d}`, `b2_{d}`, `b2_plus_1`, `b3_{d}`),
  `top_m_{i}` ConvBlock, `conv_last{i}` 1x1 + `bn_end{i}` + ReLU, `l{i}` 1x1 to the 68
  heatmaps, and between stacks `bl{i}` / `al{i}` 1x1 convs added to the stack input;
- ConvBlock: BN-ReLU-conv3x3 three times (out/2, out/4, out/4 channels, no bias), the
  three outputs concatenated, plus the input or `downsample` (BN, ReLU, 1x1 conv).

Input: RGB in [0, 1] at 256 px (face-alignment divides its crops by 255 and does not
normalise further); heatmaps are a quarter of the input side (64x64 at 256 px).
Shape letters: B batch, H/W spatial, K landmarks (68), C channels.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from norface_jax.models.perception import resize_to

NUM_LANDMARKS = 68
# Soft-argmax temperature in heatmap units: FAN's heatmaps are Gaussians of peak ~1
# and sigma ~1 heatmap pixel, so at 0.05 the peak outweighs a flat background of
# 64 * 64 pixels by e^20 / 4096 and the estimate is the local centre of mass.
DEFAULT_TEMPERATURE = 0.05


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBlock(nn.Module):
  """face-alignment ConvBlock(in, out): three pre-activated 3x3 convs, concatenated."""
  out_planes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    outs, h = [], x
    for i, c in enumerate((self.out_planes // 2, self.out_planes // 4, self.out_planes // 4)):
      h = nn.relu(_bn(train, f"bn{i + 1}")(h))
      h = nn.Conv(c, (3, 3), padding=1, use_bias=False, name=f"conv{i + 1}")(h)
      outs.append(h)
    residual = x
    if x.shape[-1] != self.out_planes:
      residual = nn.relu(_bn(train, "downsample_0")(x))
      residual = nn.Conv(self.out_planes, (1, 1), use_bias=False, name="downsample_2")(residual)
    return jnp.concatenate(outs, axis=-1) + residual


def _upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 (`F.interpolate(scale_factor=2, mode='nearest')`)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class HourGlass(nn.Module):
  """Recursive hourglass of `depth` levels: `b1_{d}` skip, pool, `b2_{d}`, inner level
  (or `b2_plus_1` at the bottom), `b3_{d}`, nearest upsample, sum."""
  depth: int = 4
  features: int = 256

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def level(d, inp):
      up1 = ConvBlock(self.features, name=f"b1_{d}")(inp, train)
      low = ConvBlock(self.features, name=f"b2_{d}")(nn.avg_pool(inp, (2, 2), (2, 2)), train)
      if d > 1:
        low = level(d - 1, low)
      else:
        low = ConvBlock(self.features, name=f"b2_plus_{d}")(low, train)
      low = ConvBlock(self.features, name=f"b3_{d}")(low, train)
      return up1 + _upsample2(low)
    return level(self.depth, x)


def soft_argmax(heatmaps_bhwk: jax.Array, temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
  """Differentiable landmark positions (B, K, 2) as (x, y) in 0..1 image units.

  softmax(heatmap / temperature) over positions weights the pixel centres
  ((j + 0.5) / W, (i + 0.5) / H): face-alignment's own decoding (argmax, then
  `(idx + 0.5) * 4` input pixels) maps a peak at heatmap pixel j to the same point.
  argmax has no gradient, so L_lm needs this instead; as temperature -> 0 it tends to
  the argmax pixel's centre.
  """
  b, h, w, k = heatmaps_bhwk.shape
  logits = heatmaps_bhwk.astype(jnp.float32).reshape(b, h * w, k) / temperature
  p = jax.nn.softmax(logits, axis=1).reshape(b, h, w, k)
  xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  x = jnp.einsum("bhwk,w->bk", p, xs)
  y = jnp.einsum("bhwk,h->bk", p, ys)
  return jnp.stack([x, y], axis=-1)


class FAN(nn.Module):
  """face-alignment's FAN(num_modules) on [0, 1] RGB input.

  output="landmarks": (B, 68, 2) soft-argmax positions (0..1) of the last stack's
  heatmaps (what L_lm compares); output="heatmaps": every stack's (B, H/4, W/4, 68).
  """
  num_modules: int = 4
  input_size: int | None = 256
  temperature: float = DEFAULT_TEMPERATURE
  output: str = "landmarks"

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False) -> Any:
    if self.output not in ("landmarks", "heatmaps"):
      raise ValueError(f"FAN output={self.output!r}: expected 'landmarks' or 'heatmaps'")
    x = resize_to(x01.astype(jnp.float32), self.input_size)
    x = nn.Conv(64, (7, 7), (2, 2), padding=3, name="conv1")(x)
    x = nn.relu(_bn(train, "bn1")(x))
    x = nn.avg_pool(ConvBlock(128, name="conv2")(x, train), (2, 2), (2, 2))
    x = ConvBlock(128, name="conv3")(x, train)
    previous = ConvBlock(256, name="conv4")(x, train)
    heatmaps = []
    for i in range(self.num_modules):
      ll = HourGlass(4, 256, name=f"m{i}")(previous, train)
      ll = ConvBlock(256, name=f"top_m_{i}")(ll, train)
      ll = nn.relu(_bn(train, f"bn_end{i}")(nn.Conv(256, (1, 1), name=f"conv_last{i}")(ll)))
      out = nn.Conv(NUM_LANDMARKS, (1, 1), name=f"l{i}")(ll)
      heatmaps.append(out)
      if i < self.num_modules - 1:
        previous = (previous + nn.Conv(256, (1, 1), name=f"bl{i}")(ll)
                    + nn.Conv(256, (1, 1), name=f"al{i}")(out))
    if self.output == "heatmaps":
      return heatmaps
    return soft_argmax(heatmaps[-1], self.temperature)
