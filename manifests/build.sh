#!/usr/bin/env bash
# Rebuilds the shipped manifests from the sample images. Run from anywhere:
#   bash manifests/build.sh
# Paths are written relative to this folder (--relative), so the files work from any clone.
# `weights` is left unset on purpose: the run command picks the weight set.
set -euo pipefail
cd "$(dirname "$0")/.."
S=pipeline/samples

# Demo: 2 contents x 2 styles, small and quick.
stxpipe manifest build -o manifests/demo.parquet --relative \
  -c $S/content/tubingen.jpg -c $S/content/chelsea.jpg \
  -s $S/style/starry_night.jpg -s $S/style/the_scream.jpg \
  -p size=128 -p iterations=30

# (a) Layer study, texture synthesis: style from ONE pooling layer at a time, no content, noise init.
stxpipe manifest build -o manifests/paper_a_style_layers.parquet --relative \
  -c $S/content/tubingen.jpg -s $S/style/starry_night.jpg \
  -p size=256 -p content_weight=0 -p init=noise \
  --sweep 'style_layers=pool1;pool2;pool3;pool4;pool5'

# (b) Style pool3 fixed, each block in turn as the content layer (conv{i}_2, block i's
#     counterpart of Gatys' conv4_2), noise init so the content layer alone shapes the content.
stxpipe manifest build -o manifests/paper_b_content_layers.parquet --relative \
  -c $S/content/tubingen.jpg -s $S/style/starry_night.jpg \
  -p size=256 -p init=noise -p style_layers=pool3 \
  --sweep 'content_layers=conv1_2;conv2_2;conv3_2;conv4_2;conv5_2'

# (c) Figure 7: L2 (mse) vs LPIPS content loss at the paper's pick (style pool3 + content block 4),
#     otherwise the rows of (b), over every sample style.
stxpipe manifest build -o manifests/paper_c_content_loss.parquet --relative \
  -c $S/content/tubingen.jpg -s $S/style \
  -p size=256 -p init=noise -p style_layers=pool3 -p content_layers=conv4_2 \
  --sweep content_loss=mse,lpips
