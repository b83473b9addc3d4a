"""Faces and labels in: SynthFACS, the five datasets' readers and prepared (TFDS) form,
the source registry, Grain loaders and augmentation. Knows nothing of models."""
