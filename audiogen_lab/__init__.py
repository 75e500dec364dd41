"""audiogen_lab: a research framework for training audio generative models.

One trainer base (:mod:`audiogen_lab.solvers.base`), one Hydra config tree (``config/``) and one
launcher (Dora) serve every model family: compression models, latent GANs, hierarchical token LMs
and contrastive audio-text models.
"""

__version__ = "0.1.0"
