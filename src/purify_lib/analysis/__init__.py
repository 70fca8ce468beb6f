"""What the chapters compute from trained models, one module per chapter that has more than tables to fill:
row writers, detector bookkeeping, statistics and the detector-aware attacks on the papers' pipelines.

The papers' methods themselves (networks, losses, step, ``train_<paper>``) live in :mod:`purify_lib.defenses`;
how each model is trained, in :mod:`purify_lib.recipes`.
"""
