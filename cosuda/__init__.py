"""cosuda: a notebook-first reproduction of "Maximizing Cosine Similarity Between Spatial
Features for Unsupervised Domain Adaptation in Semantic Segmentation" (Chung, Kim, Kwak,
WACV 2022). See README.md for the map paper section <-> notebook <-> module <-> equation."""

__version__ = "0.1.0"
