"""Trained workdirs put to use: evaluate a split or cross-validate, predict on images,
normalize a dataset with F_nor, report stage 1. Built on `training/` (which rebuilds and
restores the models); nothing in `training/` imports this package."""
