"""The 44.1 kHz consistency autoencoder, model width x noise-index sampler: `dora grid compression.consistency_ae`."""
from .._explorers import ConsistencyAEExplorer


@ConsistencyAEExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=60, cpus_per_gpu=8)
    launcher.bind_(solver="compression/consistency_ae_44khz")
    for width in (48, 64):
        for p_mean, p_std in ((-1.1, 2.0), (-0.4, 1.6)):  # Music2Latent's sampler; a narrower one nearer sigma_data
            launcher({"consistency_net.base_channels": width, "consistency.p_mean": p_mean,
                      "consistency.p_std": p_std})
