"""Training losses: spectral reconstruction, SI-SNR, the gradient balancer and the MMD
codebook-independence loss. Plain L1/L2 waveform losses are `torch.nn.L1Loss` / `torch.nn.MSELoss`."""
from .balancer import Balancer
from .mmd import MMDIndependenceLoss, mmd_independence
from .sisnr import SISNR
from .spectral import MelSpectrogram, MelSpectrogramL1Loss, MRSTFTLoss, MultiScaleMelSpectrogramLoss

__all__ = [
    "Balancer",
    "MMDIndependenceLoss",
    "MRSTFTLoss",
    "MelSpectrogram",
    "MelSpectrogramL1Loss",
    "MultiScaleMelSpectrogramLoss",
    "SISNR",
    "mmd_independence",
]
