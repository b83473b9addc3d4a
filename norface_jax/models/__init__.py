"""models: the ViT encoder, the MoE block and Norface's classifier F_cla."""

from norface_jax.models.classifier import NorfaceClassifier
from norface_jax.models.moe import MlpExpert, MoEBlock, NoisyTopKRouter
from norface_jax.models.vit import ViT, decode_variant, get_2d_sincos_pos_embed
