"""Trainers: the one loop (`loop.py`) and the stages it runs (`stage2.py`, `stage1.py`,
`mae.py`, `perception_train.py`), with what they share: optimizer, mesh and sharding,
checkpoints, the workdir's config, metric writers, multi-host setup."""
