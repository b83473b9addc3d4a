"""Stage 1's evaluator: how much of I_o's expression, and how little of its identity, I_n keeps.

Measured by networks the generator never trained against (`eval_au`, `eval_id` of the
perception dir), beside the stage-1 teachers' own view (L_exp, L_eye). It takes a
function `normalize_fn(params, images_u8) -> images_u8` and the perception networks, not
a workdir: the stage-1 trainer calls it every `eval_every` steps and
`launch/stage1_report.py`-style reports call it on a restored generator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.data import loader as data_loader
from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.losses import normalization as nor_losses


class ConsistencyEval:
  """Expression and identity consistency of I_n, measured by the independent networks.

  Built once per run: `normalize_fn(params, images_u8) -> images_u8` takes the generator
  parameters as an argument, so every evaluation of a run reuses one compiled program
  per function (the perception networks are bound once).

  Expression: the evaluation AU regressor on I_n against the ground-truth AU
  intensities of I_o (ICC(3,1), MAE), beside the same regressor on I_o itself and,
  when the source carries `image_norm` (SynthFACS's true I_n: `eval_data`), on that
  (`_Istar`, the ceiling for I_n), with the pixel MSE of I_n to it beside that of the
  plain target face (`target_u8`; what "no expression at all" costs). Identity: the
  share of I_n the evaluation identity classifier assigns to the target subject, beside
  the share of I_o (the floor).

  The teachers: L_exp and L_eye (eq. 9-10, the stage-1 loss networks) of I_n against
  I_o, and with the true I_n also of it (`_Istar`: what an exact transfer costs) and of
  the bare target (`_It`: what no transfer costs). An I_n that scores below the true
  I_n on a teacher while the independent regressor reads no expression in it has
  fooled that teacher rather than learned the expression.
  """

  def __init__(self, normalize_fn, perception, batch_sharding, exp_output: str = "embedding"):
    self.perception = perception
    self.enabled = "eval_au" in perception.modules
    if not self.enabled:
      return
    m, v = perception.modules, perception.variables
    self.bs = batch_sharding
    repl = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    fns = perception.functions(exp_output)
    exp_loss = functools.partial(nor_losses.expression_loss, normalize=exp_output == "embedding")
    f32 = lambda x: x.astype(jnp.float32) / 255.0  # noqa: E731
    au_fn = lambda x: m["eval_au"].apply(v["eval_au"], f32(x)) * 5.0  # noqa: E731
    id_fn = lambda x: jnp.argmax(m["eval_id"].apply(v["eval_id"], f32(x)), -1)  # noqa: E731

    def teach(x_o, x):  # per-sample L_exp, L_eye of x against x_o (uint8)
      return {name: jax.vmap(lambda a, b: loss(a[None], b[None]))(
          fns[net](v[net], f32(x_o)), fns[net](v[net], f32(x)))
              for name, net, loss in (("exp", "expression", exp_loss),
                                      ("eye", "eyebrow", nor_losses.eyebrow_loss))}

    def measure(params, batch, target_u8):
      """Every per-sample row of one global batch, replicated to every process (so all
      processes see the same rows, labels and validity)."""
      x_o = batch["image"]
      x_n = normalize_fn(params, x_o)
      out = {"au_n": au_fn(x_n), "au_o": au_fn(x_o), "id_n": id_fn(x_n), "id_o": id_fn(x_o),
             "gt": batch["au_intensity"], "valid": batch["_valid"]}
      others = {"n": x_n}
      if "image_norm" in batch:
        x_star = batch["image_norm"]
        others["star"] = x_star
        others["t"] = jnp.broadcast_to(target_u8, x_o.shape)
        out["au_star"] = au_fn(x_star)
        out["mse_n"] = jnp.mean(jnp.square(f32(x_n) - f32(x_star)), axis=(1, 2, 3))
        out["mse_t"] = jnp.mean(jnp.square(f32(others["t"]) - f32(x_star)), axis=(1, 2, 3))
      for tag, x in others.items():
        for loss, val in teach(x_o, x).items():
          out[f"{loss}_{tag}"] = val
      return out

    self.measure = jax.jit(measure, out_shardings=repl)

  def __call__(self, params, source, target_subject: int | None, batch_size: int,
               max_examples: int = 0, target_u8: np.ndarray | None = None) -> dict[str, float]:
    if not self.enabled:
      return {}
    meta = self.perception.meta
    star = "image_norm" in source[0]
    keys = ("image", "au_intensity") + (("image_norm",) if star else ())
    if target_u8 is None:  # Without a target face there is no "no transfer" row.
      target_u8 = np.zeros(source[0]["image"].shape, np.uint8)
      drop = ("exp_t", "eye_t", "mse_t")
    else:
      drop = ()
    rows: dict[str, list[np.ndarray]] = {}
    # The first `max_examples` items, split over the processes (not each process's first).
    for batch in data_loader.eval_batches(source, batch_size=batch_size, keys=keys,
                                          max_examples=max_examples):
      batch = {k: jax.make_array_from_process_local_data(self.bs, x) for k, x in batch.items()}
      out = jax.device_get(self.measure(params, batch, jnp.asarray(target_u8, jnp.uint8)))
      valid = np.asarray(out.pop("valid")).astype(bool)
      for key, val in out.items():
        if key not in drop:
          rows.setdefault(key, []).append(np.asarray(val)[valid])
    r = {k: np.concatenate(val) if val else np.zeros(0) for k, val in rows.items()}
    names = meta["au_names"]
    out = {"n": float(len(r["gt"]))}
    for tag in ("n", "o") + (("star",) if star else ()):
      rep = metrics_lib.intensity_report(r[f"au_{tag}"], r["gt"], names)
      out[f"expression/icc_I{tag}"] = float(rep["icc/mean"])
      out[f"expression/mae_I{tag}"] = float(rep["mae/mean"])
    for key, val in r.items():  # The teachers (L_exp, L_eye) on I_n, true I_n, target.
      if key.startswith(("exp_", "eye_")) and len(val):
        loss, tag = key.split("_")
        out[f"teacher/{loss}_I{tag}"] = float(np.mean(val))
    if star:  # Pixel MSE to the true I_n: of I_n, and of the target itself (no expression).
      out["pixels/mse_In_to_Istar"] = float(np.mean(r["mse_n"]))
      if "mse_t" in r:
        out["pixels/mse_It_to_Istar"] = float(np.mean(r["mse_t"]))
    if target_subject is not None and target_subject in meta["subjects"]:
      cls = meta["subjects"].index(target_subject)
      out["identity/target_rate_In"] = float(np.mean(r["id_n"] == cls))
      out["identity/target_rate_Io"] = float(np.mean(r["id_o"] == cls))
    return out


def evaluate_consistency(normalize_fn, source, perception, target_subject: int | None,
                         batch_sharding, batch_size: int, max_examples: int = 0,
                         target_u8: np.ndarray | None = None,
                         exp_output: str = "embedding") -> dict[str, float]:
  """One `ConsistencyEval` of `normalize_fn(images_u8) -> images_u8` (parameters bound):
  for a single measurement (`stage1_report`); a training run builds the evaluator once."""
  ev = ConsistencyEval(lambda _, x: normalize_fn(x), perception, batch_sharding, exp_output)
  return ev(None, source, target_subject, batch_size, max_examples, target_u8)
