"""Which FLAME expression channels move the eyebrows: L_eye's channels, from FLAME itself.

Norface's L_eye compares "the eyebrow expression channels of a 3DMM regressor" (DECA's
E_flame) without naming them. FLAME's 50 expression parameters are a PCA basis, not
named movements, so the channels are read off the model: every DECA install holds the
FLAME model (`generic_model.pkl`) and its landmark embedding (`landmark_embedding.npy`),
which places the iBUG-68 landmarks on the mesh, 17-26 being the eyebrows.

The rule (`eyebrow_channels`): a channel's brow effect is the mean displacement of the
eyebrow-landmark vertices per unit coefficient; the channels are ranked by it and the
smallest top-ranked set that carries `coverage` (90%) of the summed brow effect is kept.
That is: the channels that move the eyebrows, whatever else they move. The choice, the
coverage and every channel's effect go into `perception.json`.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

NUM_EXPRESSION = 50      # DECA's E_flame predicts 50 FLAME expression coefficients.
NUM_SHAPE = 300          # FLAME 2020 `shapedirs`: 300 shape, then the expression bases.
BROW_LANDMARKS = tuple(range(17, 27))  # iBUG-68 eyebrows (both sides).


class _Chumpy:
  """Stands in for a pickled chumpy object (FLAME's model stores its arrays as chumpy
  `Ch` objects): keeps the pickled state, whose `x` is the array."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    self.__dict__.update(state if isinstance(state, dict) else {"x": state})


class _Unpickler(pickle.Unpickler):
  def find_class(self, module, name):
    if module.split(".")[0] == "chumpy":
      return _Chumpy
    return super().find_class(module, name)


def _array(value: Any) -> np.ndarray:
  if isinstance(value, _Chumpy):
    value = value.__dict__.get("x", value.__dict__.get("a"))
  if hasattr(value, "toarray"):  # scipy.sparse
    value = value.toarray()
  return np.asarray(value)


def load_flame(path: str) -> dict[str, np.ndarray]:
  """FLAME's `generic_model.pkl` (Python 2 pickle of chumpy arrays) without chumpy:
  {'v_template' (V, 3), 'f' (F, 3), 'shapedirs' (V, 3, 300 + E)}."""
  try:
    with open(path, "rb") as f:
      raw = _Unpickler(f, encoding="latin1").load()
  except (OSError, pickle.UnpicklingError, EOFError) as e:
    raise ValueError(f"{path}: not a FLAME model pickle ({e})") from e
  missing = [k for k in ("v_template", "f", "shapedirs") if k not in raw]
  if missing:
    raise KeyError(f"{path}: FLAME model without {missing} (has {sorted(raw)})")
  out = {k: _array(raw[k]) for k in ("v_template", "f", "shapedirs")}
  if out["shapedirs"].ndim != 3 or out["shapedirs"].shape[-1] < NUM_SHAPE + NUM_EXPRESSION:
    raise ValueError(f"{path}: shapedirs {out['shapedirs'].shape}; expected (V, 3, >= "
                     f"{NUM_SHAPE + NUM_EXPRESSION}) (FLAME 2020: 300 shape + 100 expression)")
  return out


def load_landmark_embedding(path: str) -> tuple[np.ndarray, np.ndarray]:
  """DECA's `landmark_embedding.npy`: the 68 landmarks' (face index (68,), barycentric
  coordinates (68, 3)) on the FLAME mesh ('full_lmk_*'; or 'static_lmk_*', the 51
  without the jaw line, which start at landmark 17)."""
  try:
    emb = np.load(path, allow_pickle=True, encoding="latin1")
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a landmark embedding ({e})") from e
  emb = emb.item() if emb.dtype == object and emb.shape == () else emb
  if "full_lmk_faces_idx" in emb:
    return (np.asarray(emb["full_lmk_faces_idx"]).reshape(-1),
            np.asarray(emb["full_lmk_bary_coords"]).reshape(-1, 3))
  if "static_lmk_faces_idx" in emb:  # 51 landmarks: iBUG 17..67.
    faces = np.asarray(emb["static_lmk_faces_idx"]).reshape(-1)
    bary = np.asarray(emb["static_lmk_bary_coords"]).reshape(-1, 3)
    pad = 68 - len(faces)
    return (np.concatenate([np.full(pad, -1), faces]),
            np.concatenate([np.zeros((pad, 3)), bary]))
  raise KeyError(f"{path}: no full_lmk_faces_idx / static_lmk_faces_idx (has {sorted(emb)})")


def brow_effects(flame: dict[str, np.ndarray], lmk_faces: np.ndarray,
                 lmk_bary: np.ndarray) -> np.ndarray:
  """(NUM_EXPRESSION,) mean displacement of the eyebrow landmarks per unit of each
  expression coefficient (model units)."""
  exp_dirs = flame["shapedirs"][:, :, NUM_SHAPE:NUM_SHAPE + NUM_EXPRESSION]  # (V, 3, E)
  effects = np.zeros(NUM_EXPRESSION)
  for lm in BROW_LANDMARKS:
    face = int(lmk_faces[lm])
    if face < 0:
      raise ValueError(f"landmark {lm} (an eyebrow) has no face in the embedding")
    verts = flame["f"][face]
    d = np.einsum("k,kce->ce", lmk_bary[lm], exp_dirs[verts])  # (3, E)
    effects += np.linalg.norm(d, axis=0)
  return effects / len(BROW_LANDMARKS)


def eyebrow_channels(effects: np.ndarray, coverage: float = 0.9) -> list[int]:
  """The smallest set of channels, by decreasing brow effect, that carries `coverage`
  of the summed effect (sorted)."""
  if not 0.0 < coverage <= 1.0:
    raise ValueError(f"coverage={coverage}; expected a share in (0, 1]")
  order = np.argsort(-effects, kind="stable")
  cum = np.cumsum(effects[order]) / max(float(effects.sum()), 1e-12)
  n = int(np.searchsorted(cum, coverage - 1e-12) + 1)
  return sorted(int(c) for c in order[:n])


def select(flame_path: str, embedding_path: str, coverage: float = 0.9) -> dict[str, Any]:
  """{'channels', 'coverage', 'effects'} from FLAME and its landmark embedding."""
  effects = brow_effects(load_flame(flame_path), *load_landmark_embedding(embedding_path))
  return {"channels": eyebrow_channels(effects, coverage), "coverage": coverage,
          "effects": [float(e) for e in effects], "flame": flame_path,
          "landmark_embedding": embedding_path}
