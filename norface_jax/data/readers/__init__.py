"""Readers of the real datasets' native layouts (FORMATS.md), one module per dataset.

Each `read(root, problems, ...)` returns a `Records`: examples by split (fold parts for
the AU datasets, train/test for FER), the fold lists and label-space metadata. The TFDS
builders in `norface_jax.data.prepared` turn them into prepared datasets.
"""

from norface_jax.data.readers.common import BadInputError, Example, FoldParts, Problems, Records

READERS = ("bp4d", "bp4dplus", "disfa", "affectnet", "rafdb", "folder")


def read(dataset: str, root: str, problems: Problems, **options) -> Records:
  """The reader of `dataset` over the raw download at `root`."""
  if dataset in ("bp4d", "bp4dplus"):
    from norface_jax.data.readers import bp4d
    return bp4d.read(root, problems, plus=(dataset == "bp4dplus"), **options)
  if dataset == "disfa":
    from norface_jax.data.readers import disfa
    return disfa.read(root, problems, **options)
  if dataset == "affectnet":
    from norface_jax.data.readers import affectnet
    return affectnet.read(root, problems, **options)
  if dataset == "rafdb":
    from norface_jax.data.readers import rafdb
    return rafdb.read(root, problems, **options)
  if dataset == "folder":
    from norface_jax.data.readers import folder
    return folder.read(root, problems, **options)
  raise KeyError(f"unknown dataset {dataset!r}; readers: {', '.join(READERS)}")
