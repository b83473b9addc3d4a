"""On-device batch augmentations: pure `jnp` functions, jit-able, vectorised.

Every function takes a PRNG key and a float batch x of shape (B, H, W, C) with
values in [0, 1] and returns a batch of the same shape and dtype. Each sample
draws its own random parameters (except mixup/cutmix, which draw one mixing
coefficient per batch, as in their papers).

Paired streams. Norface's classifier reads the original face and its
identity-normalized version; both must see the same geometry. Concatenate them
on the channel axis, augment, split:

  x = jnp.concatenate([original, normalized], axis=-1)   # (B, H, W, 6)
  x, y = augment_batch(rng, x, y, cfg)
  original, normalized = jnp.split(x, 2, axis=-1)

or pass the tuple `(original, normalized)` to `augment_batch`, which does this.
All geometric and mixing functions are channel-count agnostic; `color_jitter`
treats every group of 3 channels as one RGB image and gives the groups of one
sample the same jitter.

Mixup and CutMix mix label vectors linearly, so they work for one-hot FER
targets, multi-hot AU occurrence (soft targets for sigmoid cross entropy) and
AU intensities alike. Integer class labels must be one-hot encoded first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp

Array = jax.Array


def random_flip(rng: Array, x: Array, prob: float = 0.5) -> Array:
  """Flips each sample left-right with probability `prob`."""
  flip = jax.random.bernoulli(rng, prob, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def _resample_axis(x: Array, coords: Array, axis: int) -> Array:
  """Linear interpolation of x along `axis` (1 or 2) at per-sample coords (B, M).

  Coordinates are in pixels of that axis; out-of-range ones clamp to the edge.
  """
  size = x.shape[axis]
  coords = jnp.clip(coords, 0.0, size - 1.0)
  lo = jnp.floor(coords)
  w = (coords - lo).astype(x.dtype)
  lo = lo.astype(jnp.int32)
  hi = jnp.minimum(lo + 1, size - 1)
  shape = (x.shape[0], -1, 1, 1) if axis == 1 else (x.shape[0], 1, -1, 1)
  x_lo = jnp.take_along_axis(x, lo.reshape(shape), axis=axis)
  x_hi = jnp.take_along_axis(x, hi.reshape(shape), axis=axis)
  w = w.reshape(shape)
  return x_lo * (1 - w) + x_hi * w


def crop_and_resize(x: Array, boxes: Array) -> Array:
  """Bilinear crop of per-sample boxes resized back to (H, W).

  boxes: (B, 4) as (y0, x0, h, w) in fractions of the image size. An output
  pixel centre maps to the matching point of the box (align_corners=False).
  """
  _, h, w, _ = x.shape
  y0, x0, bh, bw = (boxes[:, i:i + 1] for i in range(4))
  ys = (y0 + (jnp.arange(h) + 0.5) / h * bh) * h - 0.5   # (B, H)
  xs = (x0 + (jnp.arange(w) + 0.5) / w * bw) * w - 0.5   # (B, W)
  return _resample_axis(_resample_axis(x, ys, axis=1), xs, axis=2)


def sample_crop_boxes(rng: Array, batch: int, scale: Sequence[float] = (0.8, 1.0),
                      ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Array:
  """Random-resized-crop boxes (B, 4) = (y0, x0, h, w) in image fractions.

  Area fraction ~ U(scale), aspect ratio w/h log-uniform in `ratio`; a side that
  would exceed the image is clipped to it (instead of torchvision's retries),
  then the box position is uniform inside the image.
  """
  k_area, k_ratio, k_y, k_x = jax.random.split(rng, 4)
  area = jax.random.uniform(k_area, (batch,), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (batch,), minval=math.log(ratio[0]),
                             maxval=math.log(ratio[1]))
  r = jnp.exp(log_r)
  bw = jnp.minimum(jnp.sqrt(area * r), 1.0)
  bh = jnp.minimum(jnp.sqrt(area / r), 1.0)
  y0 = jax.random.uniform(k_y, (batch,)) * (1.0 - bh)
  x0 = jax.random.uniform(k_x, (batch,)) * (1.0 - bw)
  return jnp.stack([y0, x0, bh, bw], axis=1)


def random_resized_crop(rng: Array, x: Array, scale: Sequence[float] = (0.8, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Array:
  """Per-sample random crop (area and aspect jittered) resized back to (H, W)."""
  return crop_and_resize(x, sample_crop_boxes(rng, x.shape[0], scale, ratio))


def color_jitter(rng: Array, x: Array, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> Array:
  """Per-sample colour jitter with dm_pix, in this order, then clipped to [0, 1].

  brightness: additive delta ~ U(-b, b); contrast and saturation: factor
  ~ U(1-c, 1+c); hue: shift ~ U(-h, h) in fractions of a full turn. Channels
  are read as groups of 3 (RGB); the groups of one sample (paired streams) get
  the same parameters. With C not a multiple of 3 (grayscale), each channel is
  its own image and saturation and hue must be 0.
  """
  b, h, w, c = x.shape
  group = 3 if c % 3 == 0 else 1
  if group == 1 and (saturation or hue):
    raise ValueError(f"saturation/hue jitter needs RGB channel groups; got C={c}")
  kb, kc, ks, kh = jax.random.split(rng, 4)
  d_b = jax.random.uniform(kb, (b,), minval=-brightness, maxval=brightness)
  f_c = jax.random.uniform(kc, (b,), minval=1 - contrast, maxval=1 + contrast)
  f_s = jax.random.uniform(ks, (b,), minval=1 - saturation, maxval=1 + saturation)
  d_h = jax.random.uniform(kh, (b,), minval=-hue, maxval=hue)

  def one_image(img, db, fc, fs, dh):  # img: (H, W, group)
    if brightness:
      img = dm_pix.adjust_brightness(img, db)
    if contrast:
      img = dm_pix.adjust_contrast(img, fc)
    if saturation:
      img = dm_pix.adjust_saturation(img, fs)
    if hue:
      img = dm_pix.adjust_hue(img, dh)
    return img

  groups = x.reshape(b, h, w, c // group, group).transpose(0, 3, 1, 2, 4)
  per_group = jax.vmap(one_image, in_axes=(0, None, None, None, None))
  out = jax.vmap(per_group)(groups, d_b, f_c, f_s, d_h)
  out = out.transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)
  return jnp.clip(out, 0.0, 1.0).astype(x.dtype)


def mixup(rng: Array, x: Array, y_soft: Array, alpha: float) -> tuple[Array, Array]:
  """Mixup (Zhang et al. 2018): one lam ~ Beta(alpha, alpha) per batch.

  x' = lam x + (1-lam) x[perm], y' = lam y + (1-lam) y[perm] with a random
  permutation of the batch; y_soft is (B, L) soft/one-hot/multi-hot targets.
  """
  k_lam, k_perm = jax.random.split(rng)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(x.dtype)
  perm = jax.random.permutation(k_perm, x.shape[0])
  x_mix = lam * x + (1 - lam) * x[perm]
  y_mix = lam.astype(y_soft.dtype) * y_soft + (1 - lam.astype(y_soft.dtype)) * y_soft[perm]
  return x_mix, y_mix


def cutmix(rng: Array, x: Array, y_soft: Array, alpha: float) -> tuple[Array, Array]:
  """CutMix (Yun et al. 2019): paste a box from a permuted sample.

  lam ~ Beta(alpha, alpha) sets the box side to sqrt(1-lam) of each image side;
  the box centre is uniform and the box is clipped at the border, so the label
  weight of the pasted sample is the true pasted area fraction:
  y' = (1-a) y + a y[perm], a = box area / (H W). One box per batch.
  """
  b, h, w, _ = x.shape
  k_lam, k_perm, k_y, k_x = jax.random.split(rng, 4)
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, b)
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.uniform(k_y) * h
  cx = jax.random.uniform(k_x) * w
  half_h = jnp.round(cut * h) / 2
  half_w = jnp.round(cut * w) / 2
  y0 = jnp.clip(jnp.round(cy - half_h), 0, h)
  y1 = jnp.clip(jnp.round(cy + half_h), 0, h)
  x0 = jnp.clip(jnp.round(cx - half_w), 0, w)
  x1 = jnp.clip(jnp.round(cx + half_w), 0, w)
  rows = jnp.arange(h)
  cols = jnp.arange(w)
  in_box = (((rows >= y0) & (rows < y1))[:, None]
            & ((cols >= x0) & (cols < x1))[None, :])         # (H, W)
  area = jnp.mean(in_box.astype(jnp.float32))
  x_mix = jnp.where(in_box[None, :, :, None], x[perm], x)
  a = area.astype(y_soft.dtype)
  y_mix = (1 - a) * y_soft + a * y_soft[perm]
  return x_mix, y_mix


def cutout(rng: Array, x: Array, size_frac: float, fill: float = 0.0) -> Array:
  """Cutout (DeVries & Taylor 2017): zero a square per sample.

  The square has sides round(size_frac * H) x round(size_frac * W); its centre
  is uniform over the image, so it may be partly outside.
  """
  b, h, w, _ = x.shape
  sh, sw = round(size_frac * h), round(size_frac * w)
  k_y, k_x = jax.random.split(rng)
  cy = jax.random.randint(k_y, (b, 1, 1), 0, h)
  cx = jax.random.randint(k_x, (b, 1, 1), 0, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  y0, x0 = cy - sh // 2, cx - sw // 2
  hole = (rows >= y0) & (rows < y0 + sh) & (cols >= x0) & (cols < x0 + sw)  # (B, H, W)
  return jnp.where(hole[..., None], jnp.asarray(fill, x.dtype), x)


# Keys accepted by `augment_batch` and their "off" defaults.
DEFAULT_AUGMENT: dict[str, Any] = {
    "flip": False,            # random left-right flip, p = 0.5
    "crop_scale": None,       # (min, max) area fraction for random resized crop
    "crop_ratio": (3 / 4, 4 / 3),
    "color_jitter": 0.0,      # float s -> (brightness, contrast, saturation) = s, hue 0;
                              # or a 4-tuple (brightness, contrast, saturation, hue)
    "mixup": 0.0,             # Beta alpha; 0 = off
    "cutmix": 0.0,            # Beta alpha; 0 = off
    "mix_switch_prob": 0.5,   # with both mixup and cutmix on: P(cutmix) per batch
    "cutout": 0.0,            # square side as a fraction of the image; 0 = off
}


def validate_augment_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
  """Fills defaults; raises ValueError naming any unknown key."""
  items = dict(cfg.items()) if cfg is not None else {}
  unknown = sorted(set(items) - set(DEFAULT_AUGMENT))
  if unknown:
    raise ValueError(f"unknown augmentation key(s) {unknown}; "
                     f"known: {sorted(DEFAULT_AUGMENT)}")
  out = {**DEFAULT_AUGMENT, **items}
  cj = out["color_jitter"]
  if isinstance(cj, (int, float)):
    out["color_jitter"] = (float(cj), float(cj), float(cj), 0.0)
  elif len(cj) != 4:
    raise ValueError(f"color_jitter must be a float or 4 values, got {cj!r}")
  else:
    out["color_jitter"] = tuple(float(v) for v in cj)
  return out


def augment_batch(rng: Array, images, labels_soft: Array | None,
                  cfg: Mapping[str, Any] | None):
  """Applies the configured augmentations: flip, crop, colour, cutout, mix.

  images: a (B, H, W, C) batch, or a tuple/list of batches of the same (B, H, W)
  (paired streams), which get identical geometry, colour and mixing and come
  back in the same structure. labels_soft: (B, L) float targets or None (mixup
  and cutmix need them). cfg holds Python values (close over it before
  `jax.jit`, e.g. `functools.partial(augment_batch, cfg=cfg)`).
  Returns (images, labels_soft).
  """
  cfg = validate_augment_config(cfg)
  paired = isinstance(images, (tuple, list))
  if paired:
    splits = [im.shape[-1] for im in images]
    x = jnp.concatenate(images, axis=-1)
  else:
    x = images
  k_flip, k_crop, k_color, k_cutout, k_mix, k_switch = jax.random.split(rng, 6)
  if cfg["flip"]:
    x = random_flip(k_flip, x)
  if cfg["crop_scale"] is not None:
    x = random_resized_crop(k_crop, x, cfg["crop_scale"], cfg["crop_ratio"])
  if any(cfg["color_jitter"]):
    x = color_jitter(k_color, x, *cfg["color_jitter"])
  if cfg["cutout"]:
    x = cutout(k_cutout, x, cfg["cutout"])
  use_mixup, use_cutmix = cfg["mixup"] > 0, cfg["cutmix"] > 0
  if (use_mixup or use_cutmix) and labels_soft is None:
    raise ValueError("mixup/cutmix need labels_soft")
  if use_mixup and use_cutmix:
    x, labels_soft = jax.lax.cond(
        jax.random.bernoulli(k_switch, cfg["mix_switch_prob"]),
        lambda a, y: cutmix(k_mix, a, y, cfg["cutmix"]),
        lambda a, y: mixup(k_mix, a, y, cfg["mixup"]),
        x, labels_soft)
  elif use_mixup:
    x, labels_soft = mixup(k_mix, x, labels_soft, cfg["mixup"])
  elif use_cutmix:
    x, labels_soft = cutmix(k_mix, x, labels_soft, cfg["cutmix"])
  if paired:
    bounds = [sum(splits[:i + 1]) for i in range(len(splits) - 1)]
    x = type(images)(jnp.split(x, bounds, axis=-1))
  return x, labels_soft
