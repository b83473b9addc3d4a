"""Identity look-alikes make an AU detector transfer worse to unseen subjects."""

from norface_jax.data.synthfacs import bias_study


def test_identity_bias_widens_the_subject_gap():
  biased = bias_study.measure(1.0, au=4, seed=0)
  clean = bias_study.measure(0.0, au=4, seed=0)
  gap_b = biased["same"] - biased["unseen"]
  gap_c = clean["same"] - clean["unseen"]
  print(f"AU4 balanced accuracy: bias 1.0 same {biased['same']:.3f} unseen {biased['unseen']:.3f};"
        f" bias 0.0 same {clean['same']:.3f} unseen {clean['unseen']:.3f}")
  assert biased["same"] > 0.75  # the AU is learnable at all.
  assert gap_b > 0.12  # clearly worse on unseen subjects with the default bias ...
  assert gap_b - gap_c > 0.03  # ... and the gap shrinks without look-alikes.
