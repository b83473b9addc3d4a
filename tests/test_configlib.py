"""The config convention: arg parsing, unknown keys named, every config loads."""

import glob
import os

import pytest

from norface_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg_types_and_flags():
  c = configlib.parse_arg("synthetic,fold=2,variant=S/16,lr=0.5", synthetic=False, fold=0,
                          variant="B/16", lr=1.0, runlocal=False)
  assert c.synthetic is True and c.runlocal is False
  assert c.fold == 2 and c.variant == "S/16" and c.lr == 0.5


def test_unknown_key_is_named():
  with pytest.raises(ValueError, match="'synthtic'"):
    configlib.parse_arg("synthtic", synthetic=False)


def test_bad_value_is_named():
  with pytest.raises(ValueError, match="'fold'"):
    configlib.parse_arg("fold=two", fold=0)


def test_value_required_for_non_bool():
  with pytest.raises(ValueError, match="needs a value"):
    configlib.parse_arg("fold", fold=0)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_config_loads_and_rejects_unknown_args(path):
  c = configlib.load_config(path)
  assert c.get("stage", "cla") in ("cla", "nor", "mae", "perception", "deepfn", "pipeline")
  with pytest.raises(ValueError, match="bogus"):
    configlib.load_config(path + ":bogus=1")


STAGE2 = ["affectnet_fer", "rafdb_fer", "bp4d_au", "bp4dplus_au", "disfa_au", "bp4d_au_intensity",
          "disfa_au_intensity"]


@pytest.mark.parametrize("name", STAGE2)
def test_stage2_configs_carry_paper_defaults(name):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  for arg in ("", ":synthetic,runlocal"):
    c = configlib.load_config(path + arg)
    assert c.task in ("fer", "au_detection", "au_intensity")
    assert c.model.num_experts == 4 and c.model.top_k == 2
    assert c.loss.lambda_imp == c.loss.lambda_global == c.loss.lambda_local == 1e-3
    if not arg:
      assert c.num_epochs == 40
      assert c.optim.lr == {"fer": 2e-5, "au_detection": 1e-4, "au_intensity": 1e-3}[c.task]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_full_size_stage1_and_stage2_warn_without_an_mae_encoder(path, monkeypatch):
  """Full-size stage-1 / stage-2 configs without init_from warn loudly (before anything
  compiles); with init_from, or at CPU size, they do not."""
  from norface_jax.training import checkpointing
  c = configlib.load_config(path)
  name = os.path.basename(path)[:-3]
  if c.get("stage") not in ("cla", "nor") or name == "stage1_synthfacs":  # CPU-sized.
    return
  warned = []
  monkeypatch.setattr(checkpointing.logging, "warning", lambda *a: warned.append(a))
  c.init_from = ""
  assert checkpointing.init_from_hook(c, pretrained_encoder=True) is None
  assert checkpointing.is_full_size(c) and len(warned) == 1 and "RANDOM" in warned[0][0]
  c.init_from = "/somewhere/checkpoints"
  assert checkpointing.init_from_hook(c, pretrained_encoder=True) is not None
  small = configlib.load_config(path + ":runlocal")
  small.init_from = ""
  checkpointing.init_from_hook(small, pretrained_encoder=True)
  assert len(warned) == 1


def test_split_arg_keeps_each_item_whole_and_in_order():
  assert configlib.split_arg("task=fer,runlocal,name=x,steps=3", ("task", "name")) == (
      "task=fer,name=x", "runlocal,steps=3")
  assert configlib.split_arg(None, ("task",)) == ("", "")
  assert configlib.split_arg(" name = y , tiny ", ("name",)) == ("name = y", "tiny")
