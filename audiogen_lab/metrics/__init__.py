"""Evaluation metrics: waveform reconstruction (SI-SNR, mel distance) and codebook statistics
(usage, perplexity, inter-level dependence)."""
from .audio import MelDistance, mel_distance, si_snr
from .codebook import (CodebookStats, codebook_dependence, codebook_usage,
                       pairwise_normalized_mutual_information)

__all__ = [
    "CodebookStats",
    "MelDistance",
    "codebook_dependence",
    "codebook_usage",
    "mel_distance",
    "pairwise_normalized_mutual_information",
    "si_snr",
]
