"""gankit: train, sample and evaluate generative adversarial networks (Goodfellow et al. 2014)."""

__version__ = "0.1.0"
