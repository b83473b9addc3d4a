"""DeepFN's normalization of a whole stage-2 dataset, for Norface's stage 2 to read.

DeepFN (sec. 3) normalizes person x onto a template person y with one autoencoder per
person: a shared encoder E and two decoders D_x, D_y, trained on x's and y's frames
(no labels); x's frames are then drawn as D_y(E(x)). Here every subject of the stage-2
splits (training and test, each trained on its own frames only) is normalized onto the
template subject, and the faces are written in the paired layout of stage 2's
`precomputed` mode (`registry.PairedFolderSource`), as `launch/normalize.py` does for
Norface's F_nor. The faces are DeepFN's: grey, histogram-equalized, `ae_size` pixels,
resized to the dataset's image size and stored as RGB with three equal channels.

The autoencoders checkpoint under `<out_dir>/deepfn_ae/` after every chunk of iterations:
a rerun into the same `out_dir` (with the same settings, which it checks) continues from
the last chunk, with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from norface_jax.data import images as images_lib
from norface_jax.data import registry
from norface_jax.deepfn import ae_train
from norface_jax.deepfn import data as data_lib
from norface_jax.deepfn import protocol


def _pool_and_paths(source: Any, name: str, au_names) -> tuple[data_lib.Pool, list[str]]:
  pool = data_lib.pool_from_source(source, au_names, name)
  paths = []
  for i in range(len(source)):
    item = source[i]
    keep = {k: item[k] for k in ("path", "index") if k in item}
    paths.append(images_lib.paired_relative_path(keep, name))
  return pool, paths


def normalize_dataset(deepfn_config: ml_collections.ConfigDict, data_config: Any,
                      template_subject: int, out_dir: str,
                      splits: tuple[str, ...] = ("train", "test"), *,
                      guard: Any = None) -> dict[str, Any]:
  """Writes D_y(E(x)) of every face of `splits` under `out_dir`; returns training info.

  `deepfn_config`: a DeepFN protocol config (its `preprocess`, `ae`, `seed`, and the
  optional `nan_policy` and `stop_at`); `data_config`: the stage-2 `config.data`
  (normalization ignored); `template_subject`: the subject id (as the items' `subject`)
  of the template person, who must appear in the first split. `guard`: a
  `multihost.PreemptionGuard` to stop at on SIGTERM. A stopped run (guard or `stop_at`)
  writes no faces and returns info with 'stopped' set.
  """
  data = ml_collections.ConfigDict(dict(data_config))
  data.normalization = "none"
  data.val_share = 0.0  # Every face of the split, the validation subjects' too.
  au_names = registry.label_names(data, "au_detection")
  pools, paths = {}, {}
  for split in splits:
    source = registry.make_source(data, split, task="au_detection")
    pools[split], paths[split] = _pool_and_paths(source, split, au_names)
  if template_subject not in pools[splits[0]].subjects():
    raise ValueError(f"template subject {template_subject} is not in the {splits[0]!r} split "
                     f"(subjects {pools[splits[0]].subjects()})")
  cfg = ml_collections.ConfigDict(deepfn_config.to_dict())
  cfg.preprocess.lenet_size = int(data.image_size)  # Outputs at the stage-2 image size.
  ae_dir = os.path.join(out_dir, "deepfn_ae")
  protocol.check_same_run(os.path.join(ae_dir, "run_config.json"), dict(
      deepfn={k: v for k, v in cfg.to_dict().items() if k not in protocol.RESUME_FREE_KEYS},
      data=data.to_dict(), template=int(template_subject), splits=list(splits)))
  t0 = time.perf_counter()
  faces, info = protocol.normalize_pools(cfg, pools, (splits[0], template_subject),
                                         control=ae_train.Control(workdir=ae_dir, guard=guard))
  if info.get("stopped"):
    return info
  for split in splits:
    out = np.clip(np.round(faces[split]["deepfn"][..., 0] * 255.0), 0, 255).astype(np.uint8)
    for img, rel in zip(out, paths[split]):
      path = os.path.join(out_dir, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(np.repeat(img[..., None], 3, -1)).save(path)
  info = dict(info, template=int(template_subject), seconds_total=time.perf_counter() - t0,
              written={s: len(paths[s]) for s in splits})
  with open(os.path.join(out_dir, "deepfn_info.json"), "w") as f:
    json.dump(info, f, indent=1)
  logging.info("DeepFN: %d persons normalized onto subject %d in %.0fs (AE L1 %.3f -> %.3f).",
               info["persons"], template_subject, info["seconds_total"], info["first_loss_x"],
               info["final_loss_x"])
  return info
