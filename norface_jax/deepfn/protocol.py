"""The DeepFN evaluation protocol (paper sec. 4, table 5).

Groups: person, gender, skin type, dataset; each evaluated within-group (train and test
on the same group) and cross-group (train on one, test on the other), with the original
(grayscale, histogram-equalized) faces and with DeepFN-normalized faces. Per condition
and repetition: 4 training, 2 validation and the remaining subjects for testing
(person-dependent: the person's tasks, 4 / 2 / 2). A LeNet-5 per split, kept at its
best validation F1. Score of a test subject: mean over AUs of (F1 + accuracy) / 2.
Samples for the statistics: every (repetition, direction, test subject) score; two-sample
t-tests (`scipy.stats.ttest_ind`) between conditions.

Resumable: the autoencoders checkpoint after every chunk of iterations (`ae_train.train`,
in `<workdir>/ae/checkpoints`) and each split's records are appended to
`<workdir>/progress.jsonl` as it completes. On SIGTERM (or at `config.stop_at`, an AE
iteration) the run stops after the current chunk or split and returns; the same command
then restores the autoencoders, skips the splits already done (the split and seed draws
are replayed, so every later split is the same) and ends with the same table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from norface_jax.deepfn import ae_train
from norface_jax.deepfn import classify
from norface_jax.deepfn import data as data_lib
from norface_jax.deepfn import preprocess
from norface_jax.deepfn import saved
from norface_jax.deepfn import template as template_lib
from norface_jax.training import multihost

INPUTS = ("original", "deepfn")
GROUPS = ("person", "gender", "skin", "dataset")
# (group, analysis) -> table-5 row name.
ROWS = {("person", "within"): "Person-dependent", ("person", "cross"): "Person-independent",
        ("gender", "within"): "Gender-dependent", ("gender", "cross"): "Gender-independent",
        ("skin", "within"): "Skin-dependent", ("skin", "cross"): "Skin-independent",
        ("dataset", "within"): "Dataset-dependent", ("dataset", "cross"): "Dataset-independent"}


@dataclasses.dataclass
class Split:
  """One train/validation/test assignment; persons are (dataset, subject) pairs."""
  group: str
  analysis: str
  direction: str
  train: list
  val: list
  test: list
  segments: dict | None = None  # person-dependent: {'train'|'val'|'test': segment ids}.


def t_test(a, b) -> dict[str, float]:
  """Two-sample t-test (equal variances, scipy.stats.ttest_ind) of two score lists."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    return {"t": float("nan"), "p": float("nan"), "n_a": len(a), "n_b": len(b)}
  res = scipy.stats.ttest_ind(a, b)
  return {"t": float(res.statistic), "p": float(res.pvalue), "n_a": len(a), "n_b": len(b)}


def balanced_subjects(pool: data_lib.Pool, n: int) -> list[int]:
  """n subjects taken round-robin over the (gender, skin) cells, in subject order."""
  cells: dict[tuple[int, int], list[int]] = {}
  for s in pool.subjects():
    cells.setdefault((pool.attribute(s, "gender"), pool.attribute(s, "skin")), []).append(s)
  order, queues = [], [list(v) for _, v in sorted(cells.items())]
  while len(order) < min(n, len(pool.subjects())):
    for q in queues:
      if q and len(order) < n:
        order.append(q.pop(0))
  return sorted(order)


def _take(pool: data_lib.Pool, subjects: list[int]) -> data_lib.Pool:
  m = np.isin(pool.subject, subjects)
  return dataclasses.replace(pool, images=pool.images[m], au=pool.au[m], subject=pool.subject[m],
                             gender=pool.gender[m], skin=pool.skin[m], segment=pool.segment[m])


def _groups(pool, persons, key):
  """{group value: persons}; persons whose value is unknown (-1; for skin also the
  Fitzpatrick III-IV subjects the paper leaves out) take part in no group split."""
  out, unknown = {}, 0
  for d, s in persons:
    value = pool[d].attribute(s, key)
    if value < 0:
      unknown += 1
      continue
    out.setdefault(value, []).append((d, s))
  if unknown:
    logging.info("DeepFN %s splits: %d of %d subjects have no %s group and are left out.",
                 key, unknown, len(persons), key)
  return out


def _need(group_name: str, members: list, n: int) -> None:
  if len(members) < n:
    raise ValueError(f"group {group_name!r} has {len(members)} subjects; the protocol needs at "
                     f"least {n} (train + validation + 1 test). Use more subjects.")


def make_splits(group: str, analysis: str, pools: dict, main: str, other: str,
                rng: np.random.Generator, n_train: int, n_val: int,
                person_dependent: int, draws: int = 2) -> list[Split]:
  """The splits of one (group, analysis) for one repetition: one per person (person,
  within), `draws` draws (person, cross), one per direction (gender, skin, dataset: A→A
  and B→B within, A→B and B→A across), so that a repetition has the paper's table-5
  count of splits ("20x40", "20x2")."""
  persons = [(main, s) for s in pools[main].subjects()]
  k = n_train + n_val
  shuffle = lambda xs: [xs[i] for i in rng.permutation(len(xs))]  # noqa: E731
  if group == "person" and analysis == "within":
    chosen = shuffle(persons)[:person_dependent or len(persons)]
    splits = []
    for p in chosen:
      segs = shuffle(sorted(set(pools[p[0]].segment[pools[p[0]].subject == p[1]].tolist())))
      n = len(segs)
      if n < 3:
        raise ValueError(f"person {p} has {n} segments; the within-person split needs 3")
      a, b = max(1, n // 2), max(2, (3 * n) // 4)
      splits.append(Split(group, analysis, "Tasks→Tasks", [p], [p], [p],
                          {"train": segs[:a], "val": segs[a:b], "test": segs[b:]}))
    return splits
  if group == "person":
    _need("people", persons, k + 1)
    splits = []
    for _ in range(draws):  # Independent draws of the same condition (the paper's "x2").
      order = shuffle(persons)
      splits.append(Split(group, analysis, "People→People", order[:n_train], order[n_train:k],
                          order[k:]))
    return splits
  if group in ("gender", "skin"):
    names = data_lib.GENDER_NAMES if group == "gender" else data_lib.SKIN_NAMES
    members = _groups(pools, persons, group)
    splits = []
    for g_train in sorted(members):
      _need(names[g_train], members[g_train], k + 1)
      order = shuffle(members[g_train])
      for g_test in sorted(members):
        if (g_test == g_train) != (analysis == "within"):
          continue
        test = order[k:] if g_test == g_train else members[g_test]
        splits.append(Split(group, analysis, f"{names[g_train]}→{names[g_test]}",
                            order[:n_train], order[n_train:k], list(test)))
    return splits
  if group == "dataset":
    members = {d: [(d, s) for s in pools[d].subjects()] for d in (main, other)}
    splits = []
    for d_train in (main, other):
      _need(d_train, members[d_train], k + 1)
      order = shuffle(members[d_train])
      for d_test in (main, other):
        if (d_test == d_train) != (analysis == "within"):
          continue
        test = order[k:] if d_test == d_train else members[d_test]
        splits.append(Split(group, analysis, f"{d_train.upper()}→{d_test.upper()}",
                            order[:n_train], order[n_train:k], list(test)))
    return splits
  raise ValueError(f"unknown group {group!r}; known: {GROUPS}")


# ----------------------------------------------------------------------------------------
# Inputs: pre-processing and DeepFN normalization of every frame.

def _chunked(fn, x: np.ndarray, chunk: int = 256) -> np.ndarray:
  return np.concatenate([np.asarray(fn(x[i:i + chunk])) for i in range(0, len(x), chunk)])


def _resize_float(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[1] == size:
    return x
  return _chunked(lambda c: jax.image.resize(jnp.asarray(c), (len(c), size, size, 1), "linear",
                                            antialias=True), x)


def normalize_pools(config, pools: dict, template: tuple[str, int],
                    save_dir: str | None = None,
                    control: ae_train.Control | None = None) -> tuple[dict, dict]:
  """Trains one autoencoder per non-template person and normalizes their frames.

  Returns ({pool: {'original', 'deepfn'} arrays (N, L, L, 1)}, AE training info). With
  `save_dir`, each person's autoencoder is saved there as `ae_<pool>_<subject>`.
  `control`: checkpoint directory, preemption guard and hook (`ae_train.Control`); the
  NaN policy and `stop_at` come from the config. A stopped run returns ({}, info) with
  info['stopped'] set.
  """
  policy = ae_train.nan_policy(config)
  ae_size, lenet_size, histeq = (config.preprocess.ae_size, config.preprocess.lenet_size,
                                 config.preprocess.histeq)
  ae_in = {d: _chunked(lambda c: preprocess.preprocess_jit(c, ae_size, histeq), p.images)
           for d, p in pools.items()}
  tdata, tsubj = template
  images_y = ae_in[tdata][pools[tdata].subject == tsubj]
  persons = [(d, s) for d, p in pools.items() for s in p.subjects() if (d, s) != template]
  rows = [np.flatnonzero(pools[d].subject == s) for d, s in persons]
  trainer = ae_train.make_trainer(config.ae, skip_nonfinite=policy == "skip")
  if config.ae.mode not in ("program", "loop"):
    raise ValueError(f"config.ae.mode={config.ae.mode!r}; expected 'program' or 'loop'")
  # loop: the paper's one-by-one training on one device; program: persons over all devices.
  mesh = ae_train.person_mesh(None if config.ae.mode == "program" else
                              jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)))
  multiple = mesh.shape["data"]
  images_x, n_x = ae_train.stack_person_images([ae_in[d][r] for (d, _), r in zip(persons, rows)],
                                               multiple)
  keys = jax.random.split(jax.random.PRNGKey(config.seed), len(n_x) * 2)
  init_keys, run_keys = keys[:len(n_x)], keys[len(n_x):]
  states = ae_train.init_persons(trainer, init_keys, ae_size, mesh)
  control = dataclasses.replace(control or ae_train.Control(), nan_policy=policy,
                                stop_at=int(config.get("stop_at", 0)),
                                names=[f"{d}:{s}" for d, s in persons])
  t0 = time.time()
  states, metrics, status = ae_train.train(
      trainer, states, images_x, n_x, images_y, run_keys, config.ae.iterations, mesh,
      mode=config.ae.mode, steps_per_call=config.ae.steps_per_call,
      person_chunk=config.ae.person_chunk, control=control)
  seconds = time.time() - t0
  if status["stopped"]:
    return {}, {"persons": len(persons), "iterations": config.ae.iterations, **status}
  normalized = ae_train.normalize_persons(trainer, states, images_x, mesh)
  if save_dir:
    host = jax.device_get(states.params)
    kwargs = dict(widths=list(config.ae.widths), latent=config.ae.latent, image_size=ae_size)
    for i, (d, s) in enumerate(persons):
      saved.save(os.path.join(save_dir, f"ae_{d}_{s}"), "deepfn_ae",
                 jax.tree.map(lambda a: a[i], host), kwargs, person=f"{d}:{s}",
                 template=f"{tdata}:{tsubj}", iterations=config.ae.iterations,
                 preprocess=config.preprocess.to_dict())
  out = {}
  for d, p in pools.items():
    deepfn = np.zeros((len(p.images), ae_size, ae_size, 1), np.float32)
    tmask = p.subject == tsubj if d == tdata else np.zeros(len(p.images), bool)
    deepfn[tmask] = ae_in[d][tmask]  # The template is its own normalization (not evaluated).
    out[d] = {"original": _resize_float(ae_in[d], lenet_size)}
    for i, ((dd, _), r) in enumerate(zip(persons, rows)):
      if dd == d:
        deepfn[r] = normalized[i, :len(r)]
    out[d]["deepfn"] = _resize_float(deepfn, lenet_size)
  info = {"persons": len(persons), "iterations": config.ae.iterations, "seconds": seconds,
          "resumed_at": status["start"], "nonfinite": status["nonfinite"],
          "final_loss_x": float(np.mean(metrics["loss_x"][:len(persons), -1])),
          "final_loss_y": float(np.mean(metrics["loss_y"][:len(persons), -1])),
          "first_loss_x": float(np.mean(metrics["loss_x"][:len(persons), 0]))}
  return out, info


# ----------------------------------------------------------------------------------------
# Running the conditions.

def _frames(pools, split: Split, part: str, aus: tuple[str, ...]):
  """Rows of the split's `part` persons: (pool name, row indices, subject keys)."""
  out = []
  for d, s in getattr(split, part):
    m = pools[d].subject == s
    if split.segments is not None:
      m &= np.isin(pools[d].segment, split.segments[part])
    out.append((d, np.flatnonzero(m), f"{d}:{s}"))
  return out


def _gather(pools, inputs, parts, kind: str, aus):
  xs, ys, keys = [], [], []
  for d, rows, key in parts:
    cols = [pools[d].au_names.index(a) for a in aus]
    xs.append(inputs[d][kind][rows])
    ys.append(pools[d].au[rows][:, cols])
    keys += [key] * len(rows)
  return np.concatenate(xs), np.concatenate(ys), np.asarray(keys)


def run_split(config, pools, inputs, split: Split, aus, trainers, seed: int,
              save_stem: str | None = None) -> list[dict]:
  """Trains a LeNet per input kind on one split; per test subject records.

  With `save_stem`, each LeNet is saved as `<save_stem>_<input kind>`.
  """
  records = []
  for kind in INPUTS:
    tx, ty, _ = _gather(pools, inputs, _frames(pools, split, "train", aus), kind, aus)
    vx, vy, _ = _gather(pools, inputs, _frames(pools, split, "val", aus), kind, aus)
    sx, sy, skeys = _gather(pools, inputs, _frames(pools, split, "test", aus), kind, aus)
    trainer = trainers[len(aus)]
    params, hist = classify.train(trainer, seed, tx, ty, vx, vy)
    if save_stem:
      saved.save(f"{save_stem}_{kind}", "deepfn_lenet", params,
                 dict(num_aus=len(aus), image_size=int(tx.shape[1])), input=kind,
                 aus=list(aus), group=split.group, analysis=split.analysis,
                 direction=split.direction, train=[f"{d}:{s}" for d, s in split.train],
                 best_epoch=hist["best_epoch"], preprocess=config.preprocess.to_dict())
    probs = classify.predict(trainer, params, sx)
    for subj, (score, per_au) in classify.per_subject_scores(probs, sy, skeys).items():
      records.append({"group": split.group, "analysis": split.analysis,
                      "direction": split.direction, "input": kind, "subject": subj,
                      "score": score, "per_au": [float(v) for v in per_au],
                      "best_epoch": hist["best_epoch"]})
  return records


# Keys that may change between a run and its resumption (they change no result).
RESUME_FREE_KEYS = ("command", "stop_at", "save_params", "nan_policy")


def check_same_run(path: str, meta: dict[str, Any]) -> None:
  """Writes `meta` (what the results depend on) to `path`, or checks it equals what a
  previous run wrote there, so that a resumed run never mixes in another run's state."""
  meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != meta:
      diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
      raise ValueError(f"{path}: this directory holds a run with other settings (differing: "
                       f"{diff}); use a new directory or delete it to start over")
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  _write_atomic(path, json.dumps(meta, indent=1, sort_keys=True))


def _write_atomic(path: str, text: str) -> None:
  if jax.process_index() != 0:  # One writer when several processes share the workdir.
    return
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def read_progress(path: str) -> dict[str, list[dict]]:
  """Split key -> records of the splits done (`progress.jsonl`; a torn last line dropped)."""
  if not os.path.exists(path):
    return {}
  done, lines = {}, []
  with open(path) as f:
    for line in f:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:
        logging.warning("%s: dropping an incomplete line (the run was killed writing it).", path)
        continue
      done[entry["split"]] = entry["records"]
      lines.append(line if line.endswith("\n") else line + "\n")
  _write_atomic(path, "".join(lines))  # Appends start on a clean line.
  return done


def _append_progress(path: str, key: str, records: list[dict]) -> None:
  if jax.process_index() != 0:
    return
  with open(path, "a") as f:
    f.write(json.dumps({"split": key, "records": records}) + "\n")
    f.flush()
    os.fsync(f.fileno())


def run(config, workdir: str, *, on_chunk: Callable[[int], None] | None = None
        ) -> dict[str, Any]:
  """The whole protocol; writes deepfn_table.md, deepfn_protocol.png, records.json.

  Returns {summary, info, records, stopped}; a run stopped by SIGTERM or `config.stop_at`
  returns {stopped: 'preempted' | 'stop_at'} early, and the same call resumes it.
  `on_chunk(iteration)` is called after each autoencoder chunk (tests signal there).
  """
  ae_train.nan_policy(config)  # Validated before any work.
  save = config.get("save_params", "")
  if save not in ("", "ae", "lenet", "all"):
    raise ValueError(f"config.save_params={save!r}; expected '', 'ae', 'lenet' or 'all'")
  os.makedirs(workdir, exist_ok=True)
  check_same_run(os.path.join(workdir, "run_config.json"),
                 {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE_KEYS})
  guard = multihost.PreemptionGuard()
  try:
    return _run(config, workdir, guard, on_chunk)
  finally:
    guard.close()


def _run(config, workdir: str, guard: multihost.PreemptionGuard, on_chunk) -> dict[str, Any]:
  t_start = time.time()
  main, other = config.data.dataset, config.data.cross_dataset
  pools = {}
  for d in (main, other) if "dataset" in config.protocol.groups else (main,):
    pool = data_lib.open_pool(config.data, d)
    n = config.data.max_subjects.get(d, 0)
    pools[d] = _take(pool, balanced_subjects(pool, n)) if n else pool
  tsubj = template_lib.choose_template(pools[main].au, pools[main].subject,
                                       config.protocol.template_by)
  template = (main, tsubj)
  logging.info("DeepFN template: %s subject %d", main, tsubj)
  save = config.get("save_params", "")
  save_dir = os.path.join(workdir, "params")
  control = ae_train.Control(workdir=os.path.join(workdir, "ae"), guard=guard, on_chunk=on_chunk)
  inputs, ae_info = normalize_pools(config, pools, template,
                                    save_dir if save in ("ae", "all") else None, control)
  if ae_info.get("stopped"):
    return {"stopped": ae_info["stopped"], "info": {"ae": ae_info}}
  analysis_pools = dict(pools)
  analysis_pools[main] = _take(pools[main], [s for s in pools[main].subjects() if s != tsubj])
  # Row order is unchanged by _take only when the template's rows are dropped consistently.
  keep = pools[main].subject != tsubj
  inputs[main] = {k: v[keep] for k, v in inputs[main].items()}
  common = tuple(a for a in pools[main].au_names if other in pools and a in pools[other].au_names)
  trainers = {}
  for n in {len(pools[main].au_names), len(common)} - {0}:
    trainers[n] = classify.make_trainer(config.lenet, n)
  p = config.protocol
  records = []
  progress = os.path.join(workdir, "progress.jsonl")
  done = read_progress(progress)
  if done:
    logging.info("DeepFN: %d splits done already (%s), skipped.", len(done), progress)
  rng = np.random.default_rng(config.seed)
  for rep in range(p.repetitions):
    for group in p.groups:
      aus = common if group == "dataset" else pools[main].au_names
      for analysis in ("within", "cross"):
        # Splits and seeds are drawn for done splits too: later ones stay the same.
        splits = make_splits(group, analysis, analysis_pools, main, other, rng, p.n_train,
                             p.n_val, p.person_dependent_persons,
                             p.get("person_independent_draws", 2))
        for i, split in enumerate(splits):
          seed = int(rng.integers(2**31))
          key = f"rep{rep}/{group}/{analysis}/{i}"
          if key in done:
            records += done[key]
            continue
          stem = (os.path.join(save_dir, f"lenet_rep{rep}_{group}_{analysis}_{i}")
                  if save in ("lenet", "all") else None)
          recs = [{"rep": rep, "split": i, **r} for r in run_split(config, analysis_pools, inputs, split,
                                                       aus, trainers, seed, stem)]
          _append_progress(progress, key, recs)
          records += recs
          if guard.should_stop(len(records)):
            logging.warning("DeepFN: preempted after split %s; the same command resumes.", key)
            return {"stopped": "preempted", "info": {"ae": ae_info}}
      logging.info("rep %d group %s done (%.0f s)", rep, group, time.time() - t_start)
  summary = summarize(records)
  info = {"template": f"{main}:{tsubj}", "ae": ae_info, "seconds": time.time() - t_start,
          "subjects": {d: len(pl.subjects()) for d, pl in analysis_pools.items()},
          "aus": {"main": list(pools[main].au_names), "common": list(common)},
          "repetitions": p.repetitions, "command": config.get("command", "")}
  with open(os.path.join(workdir, "records.json"), "w") as f:
    json.dump({"info": info, "records": records, "summary": summary}, f, indent=1)
  from norface_jax.deepfn import report
  report.write_markdown(os.path.join(workdir, "deepfn_table.md"), summary, info, config)
  report.write_chart(os.path.join(workdir, "deepfn_protocol.png"), summary)
  report.write_per_au_chart(os.path.join(workdir, "deepfn_per_au.png"), summary,
                            pools[main].au_names)
  report.write_examples(os.path.join(workdir, "deepfn_examples.png"), pools, inputs, main, other,
                        template)
  return {"summary": summary, "info": info, "records": records, "stopped": ""}


def summarize(records: list[dict]) -> dict[str, Any]:
  """Per table row and input: mean, std, standard error, n; and the t-tests."""
  def scores(group, analysis, kind):
    return [r["score"] for r in records
            if r["group"] == group and r["analysis"] == analysis and r["input"] == kind]
  rows, tests = {}, {}
  for (group, analysis), name in ROWS.items():
    entry = {}
    for kind in INPUTS:
      s = np.asarray(scores(group, analysis, kind), np.float64)
      if len(s):
        entry[kind] = {"mean": float(s.mean()), "std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
                       "sem": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else 0.0,
                       "n": int(len(s))}
    if entry:
      mine = [r for r in records if r["group"] == group and r["analysis"] == analysis]
      dirs = sorted({r["direction"] for r in mine})
      reps = {r.get("rep", 0) for r in mine}
      splits = {(r.get("rep", 0), r.get("split", r["direction"])) for r in mine}
      rows[name] = {"group": group, "analysis": analysis, "directions": dirs,
                    "repetitions": len(reps), "splits_per_rep": len(splits) // max(len(reps), 1),
                    **entry, "per_au": per_au(mine)}
  for group in GROUPS:
    w = {k: scores(group, "within", k) for k in INPUTS}
    c = {k: scores(group, "cross", k) for k in INPUTS}
    if not any(w.values()):
      continue
    tests[group] = {
        "gap original (within vs cross)": t_test(w["original"], c["original"]),
        "gap DeepFN (within vs cross)": t_test(w["deepfn"], c["deepfn"]),
        "cross: DeepFN vs original": t_test(c["deepfn"], c["original"]),
        "within: DeepFN vs original": t_test(w["deepfn"], w["original"]),
        "cross DeepFN vs within original": t_test(c["deepfn"], w["original"]),
    }
  return {"rows": rows, "tests": tests, "test_groups": test_group_effects(records)}


def per_au(records: list[dict]) -> dict[str, list[float]]:
  """Per-AU mean over the records' test subjects, per input, and DeepFN's gain (the
  paper's Fig. 4 for the person-independent row)."""
  out = {}
  for kind in INPUTS:
    rows = [r["per_au"] for r in records if r["input"] == kind and "per_au" in r]
    if rows and len({len(x) for x in rows}) == 1:
      out[kind] = np.nanmean(np.asarray(rows, np.float64), axis=0).tolist()
  if len(out) == len(INPUTS):
    out["gain"] = (np.asarray(out["deepfn"]) - np.asarray(out["original"])).tolist()
  return out


def test_group_effects(records: list[dict]) -> dict[str, Any]:
  """Scores by the test set's group (gender: female vs male test sets; skin: darker vs
  lighter), whatever the training group, per input, with the two-sample t-test; the
  paper's sec. 5.2 finding that female test sets score higher."""
  out = {}
  for group in ("gender", "skin"):
    mine = [r for r in records if r["group"] == group]
    if not mine:
      continue
    names = data_lib.GENDER_NAMES if group == "gender" else data_lib.SKIN_NAMES
    entry = {}
    for kind in INPUTS:
      by_test = {g: [r["score"] for r in mine if r["input"] == kind
                     and r["direction"].split("→")[-1] == g] for g in names}
      entry[kind] = {g: {"mean": float(np.mean(v)) if v else float("nan"), "n": len(v)}
                     for g, v in by_test.items()}
      entry[kind]["t-test"] = t_test(by_test[names[1]], by_test[names[0]])
    out[group] = {"compared": f"{names[1]} vs {names[0]} test sets", **entry}
  return out
