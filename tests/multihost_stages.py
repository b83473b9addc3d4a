"""One process of a 2-process job that runs every trainer a few steps in turn, then
normalizes the test faces with the stage-1 generator (`test_multihost.py` runs two of
these, 4 CPU devices each, and compares with the same work done by 1 process x 8).
Stage 2 is stopped at step 2 and resumed, so Orbax saves and restores across processes.

  python -m tests.multihost_stages --coordinator=127.0.0.1:PORT --process_id=I --workdir=W
"""

import argparse
import os


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--coordinator", required=True)
  p.add_argument("--process_id", type=int, required=True)
  p.add_argument("--num_processes", type=int, default=2)
  p.add_argument("--workdir", required=True)
  args = p.parse_args()
  from norface_jax import console
  from norface_jax.training import multihost
  console.setup(verbose=False)
  multihost.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                       process_id=args.process_id)
  run_stages(args.workdir, interrupt=True)


def run_stages(workdir: str, interrupt: bool = False) -> None:
  """The stages in the order the tests use (also the 1-process reference, straight)."""
  from norface_jax.inference import normalize
  from norface_jax.training import entry
  from tests.test_stage_guarantees import multihost_configs
  for name, config in multihost_configs().items():
    if interrupt and name == "stage2":
      entry.train(config, os.path.join(workdir, name), stop_at=2)
    entry.train(config, os.path.join(workdir, name))
  normalize.normalize_dataset(os.path.join(workdir, "stage1"), None,
                              os.path.join(workdir, "normalized"), splits=("test",),
                              batch_size=16, max_items=40)


if __name__ == "__main__":
  main()
