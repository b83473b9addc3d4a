"""The floor and the probes of a stage-2 config's data, over seeds: what any stage-2
number on these faces should be read against.

  python launch/probes.py --config=configs/bp4d_au.py:synthetic,runlocal,norm=oracle \
      --config.data.frames_per_subject=400 --config.data.test_frames_per_subject=24 \
      --seeds=0,1,2 --cnn_steps=1000

Prints (and with --out writes as JSON) the trivial predictor, the linear classifier on
32x32 grey pixels of the originals (and of the oracle I_n when the config renders it),
and the plain CNN on the originals, as mean ± std over the seeds (percent: mean AU F1,
or FER accuracy). `--cnn_steps=0` skips the CNN (about 0.6 s a step on one CPU core at
64 px and the default widths).
"""

import json

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax.evaluation import baselines

_CONFIG = config_flags.DEFINE_config_file("config", None, "A stage-2 config.", lock_config=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the trained probes.")
_LINEAR_STEPS = flags.DEFINE_integer("linear_steps", 2000, "Steps of the linear probe.")
_CNN_STEPS = flags.DEFINE_integer("cnn_steps", 1000, "Steps of the CNN probe (0: skip it).")
_CNN_BATCH = flags.DEFINE_integer("cnn_batch", 32, "Batch of the CNN probe.")
_CNN_WIDTHS = flags.DEFINE_list("cnn_widths", ["32", "64", "128"], "The CNN's three widths.")
_OUT = flags.DEFINE_string("out", "", "Also write the rows here (JSON).")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  console.setup()
  c = _CONFIG.value
  task = c.task
  d = baselines.load_faces(c.data, task)
  seeds = [int(s) for s in _SEEDS.value]
  classes = int(c.data.num_classes) if task == "fer" else None
  rows = {"trivial": [baselines.trivial(task, d["train_y"], d["test_y"])]}
  streams = [("orig", "image")] + ([("oracle", "oracle")] if "train_oracle" in d else [])
  for name, key in streams:
    rows[f"linear_{name}"] = [baselines.linear_probe(
        d[f"train_{key}"], d["train_y"], d[f"test_{key}"], d["test_y"], task, seed=s,
        steps=_LINEAR_STEPS.value, num_classes=classes) for s in seeds]
    print(f"linear_{name}: {rows[f'linear_{name}']}", flush=True)
  if _CNN_STEPS.value:
    rows["cnn_orig"] = []
    for s in seeds:
      rows["cnn_orig"].append(baselines.cnn_probe(
          d["train_image"], d["train_y"], d["test_image"], d["test_y"], task, seed=s,
          steps=_CNN_STEPS.value, batch_size=_CNN_BATCH.value,
          widths=tuple(int(w) for w in _CNN_WIDTHS.value), num_classes=classes))
      print(f"cnn_orig seed {s}: {rows['cnn_orig'][-1]:.1f}", flush=True)
  print(f"{len(d['train_y'])} training faces, {len(d['test_y'])} test faces ({task})")
  out = {}
  for name, values in rows.items():
    out[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                 "seeds": [float(v) for v in values]}
    print(f"| {name} | {out[name]['mean']:.1f} ± {out[name]['std']:.1f} |")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
