"""DeepFN (Hernandez et al.): autoencoder face normalization onto a template person,
a LeNet-5 AU classifier, and the group-split evaluation protocol.

Modules: `preprocess` (grayscale + histogram equalization), `warp` (random affine and
grid-warp augmentation), `autoencoder` (shared encoder, decoders D_x and D_y),
`ae_train` (one person or all persons at once, vmapped and sharded), `template`
(the most expressive subject), `lenet` (LeNet-5), `classify` (LeNet training with
best-by-validation-F1 selection), `data` (per-subject arrays from any source),
`protocol` (table 5 conditions, t-tests, report), `benchmark`.
"""
