"""Training losses: spectral reconstruction, SI-SNR, the gradient balancer, the MMD
codebook-independence loss, and the latent GAN's hinge loss, R1 and gradient penalties. Plain L1/L2 waveform
losses are `torch.nn.L1Loss` / `torch.nn.MSELoss`."""
from .balancer import Balancer
from .gan import AdaptiveR1, gradient_penalty, hinge_discriminator_loss, jump_excess_penalty, r1_penalty
from .mmd import MMDIndependenceLoss, mmd_independence
from .sisnr import SISNR
from .spectral import MelSpectrogram, MelSpectrogramL1Loss, MRSTFTLoss, MultiScaleMelSpectrogramLoss

__all__ = [
    "AdaptiveR1",
    "Balancer",
    "MMDIndependenceLoss",
    "MRSTFTLoss",
    "MelSpectrogram",
    "MelSpectrogramL1Loss",
    "MultiScaleMelSpectrogramLoss",
    "SISNR",
    "gradient_penalty",
    "hinge_discriminator_loss",
    "jump_excess_penalty",
    "mmd_independence",
    "r1_penalty",
]
