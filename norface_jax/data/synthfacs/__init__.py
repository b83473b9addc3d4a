"""SynthFACS: procedurally rendered faces with known identity, AUs, emotion and pose.

The embedded stand-in for BP4D, BP4D+, DISFA, AffectNet and RAF-DB (docs/synthfacs.md).
"""

from norface_jax.data.synthfacs.generate import render_items
from norface_jax.data.synthfacs.identity import sample_identity
from norface_jax.data.synthfacs.presets import PRESETS, Preset, get, preset_info
from norface_jax.data.synthfacs.scene import frontal_pose, render, sample_pose, sample_scene
from norface_jax.data.synthfacs.source import SynthFACSSource
from norface_jax.data.synthfacs.writer import write
