"""Default values of a DeepFN protocol experiment; `configs/deepfn_*.py` start from these.

Paper values (Hernandez et al., sec. 3-4): 128x128 grayscale histogram-equalized AE input,
widths 128..1024, latent 1024, batches of 64, 50k iterations, Adam 5e-5 (0.5, 0.999);
LeNet-5 on 64x64, 50 epochs, same Adam; 4 / 2 / rest subjects; 20 repetitions.
"""

from __future__ import annotations

import ml_collections

from norface_jax.configlib import parse_arg


def protocol_config(arg: str | None, *, dataset: str,
                    cross_dataset: str) -> ml_collections.ConfigDict:
  """Args: synthetic, runlocal, tiny (test-sized), reps=N, ae_steps=N, epochs=N,
  mode=program|loop, save=ae|lenet|all (trained params to <workdir>/params/),
  data_dir=DIR (where `launch/prepare_data.py` wrote the real datasets)."""
  a = parse_arg(arg, synthetic=False, runlocal=False, tiny=False, reps=0, ae_steps=0, epochs=0,
                mode="", save="", data_dir="~/tensorflow_datasets")
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Resumable runs (the same command continues a stopped one; see deepfn/protocol.py):
  # stop after the autoencoder chunk that reaches this iteration, as a preemption would
  # (0 = never); and what a non-finite AE loss does: "stop" (raise) or "skip" (the
  # iteration leaves the autoencoder as it was).
  c.stop_at = 0
  c.nan_policy = "stop"
  # "" | "ae" | "lenet" | "all": write those trained networks to <workdir>/params/
  # (`deepfn.saved`, exportable with launch/export_torch.py --deepfn=...). Off by default:
  # at paper sizes an autoencoder is ~300 MB and a protocol trains one per person.
  c.save_params = a.save
  c.data = dict(dataset=dataset, cross_dataset=cross_dataset, synthetic=a.synthetic, seed=0,
                data_dir=a.data_dir, image_size=128, frames_per_subject=64,
                identity_bias=1.0, subjects={}, max_subjects={})
  c.preprocess = dict(ae_size=128, lenet_size=64, histeq=True)
  c.ae = dict(widths=(128, 256, 512, 1024), latent=1024, batch_size=64, iterations=50_000,
              lr=5e-5, b1=0.5, b2=0.999, dtype="float32",
              warp=dict(rotation_deg=10.0, scale=0.05, shift=0.05, grid=5, noise=5.0 / 256),
              mode="program",        # program: all persons in one compiled program; loop: paper.
              steps_per_call=1000,   # iterations per compiled call (a lax.scan).
              person_chunk=0)        # persons vmapped together per device (0 = all local).
  c.lenet = dict(batch_size=32, epochs=50, lr=5e-5, b1=0.5, b2=0.999)
  c.protocol = dict(repetitions=20, n_train=4, n_val=2, groups=("person", "gender", "skin",
                                                                "dataset"),
                    person_dependent_persons=0,  # 0 = every person, as the paper's 20x40.
                    person_independent_draws=2,  # People→People draws per rep (20x2).
                    template_by="count")
  if a.runlocal or a.tiny:
    # CPU-sized: 64x64 AE input (the AE then has a 2x2 bottleneck grid instead of 4x4),
    # AE widths / 16, few iterations and a higher lr so that something is learnt,
    # balanced subject subsets that still give each gender / skin group 4 + 2 + >= 1.
    c.data.image_size = 64
    c.data.frames_per_subject = 32
    c.data.max_subjects = {dataset: 16, cross_dataset: 7}
    c.preprocess.ae_size = 64
    c.ae.widths = (8, 16, 32, 64)
    c.ae.latent = 64
    c.ae.batch_size = 8
    c.ae.iterations = 100
    c.ae.lr = 1e-3
    c.ae.steps_per_call = 100
    c.ae.mode = "loop"  # XLA:CPU runs vmapped (grouped) convolutions slowly; see docs/deepfn.md.
    c.lenet.epochs = 10
    c.lenet.lr = 1e-3
    c.protocol.repetitions = 2
    c.protocol.person_dependent_persons = 3
  if a.tiny:
    c.data.frames_per_subject = 16
    c.data.max_subjects = {dataset: 16, cross_dataset: 7}
    c.ae.iterations = 2
    c.ae.steps_per_call = 2
    c.lenet.epochs = 1
    c.lenet.batch_size = 16
    c.protocol.repetitions = 1
    c.protocol.person_dependent_persons = 1
  if a.reps:
    c.protocol.repetitions = a.reps
  if a.ae_steps:
    c.ae.iterations = a.ae_steps
    c.ae.steps_per_call = min(c.ae.steps_per_call, a.ae_steps)
  if a.epochs:
    c.lenet.epochs = a.epochs
  if a.mode:
    c.ae.mode = a.mode
  return c
