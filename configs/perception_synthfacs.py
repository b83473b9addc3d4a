r"""SynthFACS perception networks for the stage-1 losses (trained from ground truth).

  python launch/train.py --config=configs/perception_synthfacs.py --workdir=workdirs/perception

then point stage 1 at it: `--config=configs/normalizer.py:synthetic,runlocal,perception_dir=workdirs/perception`
(without `perception_dir`, a synthetic stage-1 run trains them itself under its workdir).
Args: preset=bp4d, size=64, steps=N, frames=F (frames per subject), batch=B,
eval_head=gap|flatten (the independent AU regressor's head), lr=1e-3,
schedule=cosine|constant, exp_arch=iresnet|conv (the expression embedding behind L_exp),
exp_targets=dataset|all (what that embedding's head regresses: the dataset's intensity
AUs, or all 17 SynthFACS AUs, a whole-face expression embedding as FECNet's).

At the end the networks are measured on unseen faces (`perception_train.evaluate`,
written to `<workdir>/quality.json`): AU ICC of the expression network and of the
independent AU regressor, landmark RMSE, eyebrow r, identity accuracy.
"""

from norface_jax.configlib import parse_arg
from norface_jax.training import perception_train


def get_config(arg=None):
  a = parse_arg(arg, preset="bp4d", size=64, steps=500, frames=48, batch=32,
                eval_head="flatten", lr=1e-3, schedule="cosine", exp_arch="iresnet",
                exp_targets="dataset")
  return perception_train.synthfacs_config(
      preset=a.preset, size=a.size, steps=a.steps, frames=a.frames, batch=a.batch,
      eval_head=a.eval_head, lr=a.lr, schedule=a.schedule, exp_arch=a.exp_arch,
      exp_targets=a.exp_targets)
