"""cosuda: a notebook-first reproduction of "Maximizing Cosine Similarity Between Spatial
Features for Unsupervised Domain Adaptation in Semantic Segmentation" (Chung, Kim, Kwak,
WACV 2022). See README.md for the map paper section <-> notebook <-> module <-> equation."""

import os

# OpenMP threads that spin while waiting make small CPU models crawl as soon as another process
# shares the cores (measured: 3.9 s instead of 0.18 s per step on 2 shared cores). Only effective
# when cosuda is imported before torch; scripts/*.sh export it too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
