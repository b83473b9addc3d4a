"""The package's import graph, built from the source (imports anywhere in a file, as
Python would execute them): no cycle between modules or between folders, and the
layers point one way:

  launch -> pipeline -> inference -> training -> evaluation -> models, losses, data
  interop -> training;  benchmark -> training, torch_twins;  torch_twins: no JAX;
  detection -> data (the data layer gets a face finder passed in, never imports one).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "norface_jax")

# Folder -> folders it must never import (directly or lazily).
FORBIDDEN = {
    "models": {"training", "evaluation", "inference", "interop", "pipeline", "benchmark",
               "deepfn", "data", "losses", "detection"},
    "losses": {"training", "evaluation", "inference", "interop", "pipeline", "benchmark",
               "deepfn", "data", "detection"},
    "data": {"training", "evaluation", "inference", "interop", "pipeline", "benchmark",
             "deepfn", "models", "losses", "detection"},
    "detection": {"training", "evaluation", "inference", "interop", "pipeline", "benchmark",
                  "deepfn", "models", "losses"},
    "evaluation": {"training", "inference", "interop", "pipeline", "benchmark"},
    "training": {"inference", "interop", "pipeline", "benchmark"},
    "inference": {"pipeline", "benchmark"},
    "interop": {"pipeline", "benchmark", "inference"},
    "torch_twins": {"training", "evaluation", "inference", "interop", "pipeline", "benchmark",
                    "models", "data", "losses", "deepfn", "detection"},
}


def module_graph() -> dict[str, set[str]]:
  """module -> the package modules it imports (`norface_jax.training.stage2`, ...)."""
  mods = {}
  for d, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(d, f)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
  edges = {m: set() for m in mods}
  for m, path in mods.items():
    here = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
    with open(path) as fh:
      tree = ast.parse(fh.read())
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = here.split(".")
          base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
      for name in names:
        while name and name not in mods:
          name = name.rsplit(".", 1)[0] if "." in name else ""
        if name and name != m and not m.startswith(name + ".") and name != "norface_jax":
          edges[m].add(name)
  return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one node (Tarjan)."""
  index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in list(edges):
    if v not in index:
      visit(v)
  return out


def folder_graph(edges):
  """norface_jax/<folder> -> folders it imports (top-level modules count as folders)."""
  def top(m):
    name = (m.split(".") + ["__init__"])[1]
    return {"pipeline_report": "pipeline"}.get(name, name)

  out = {}
  for m, targets in edges.items():
    out.setdefault(top(m), set()).update(top(t) for t in targets if top(t) != top(m))
  return out


def test_the_graph_sees_known_edges():
  """The graph is real: it finds imports at the top of a file and inside functions."""
  edges = module_graph()
  assert "norface_jax.training.loop" in edges["norface_jax.training.stage2"]
  assert "norface_jax.training.stage1" in edges["norface_jax.training.stage2"]
  assert "norface_jax.training.stage1" in edges["norface_jax.inference.normalize"]
  # A planted cycle is found.
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_import_cycle():
  assert cycles(module_graph()) == []


def test_no_folder_import_cycle():
  assert cycles(folder_graph(module_graph())) == []


@pytest.mark.parametrize("low", sorted(FORBIDDEN))
def test_layers_point_one_way(low):
  graph = folder_graph(module_graph())
  bad = sorted(graph.get(low, set()) & FORBIDDEN[low])
  assert not bad, f"norface_jax/{low} imports {bad}"


def test_torch_twins_import_no_jax():
  for d, _, files in os.walk(os.path.join(PKG, "torch_twins")):
    for f in files:
      if f.endswith(".py"):
        with open(os.path.join(d, f)) as fh:
          tree = ast.parse(fh.read())
        for node in ast.walk(tree):
          names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
          for name in names:
            assert name.split(".")[0] not in ("jax", "flax", "optax"), (f, name)
