"""The tiny CPU codec, with and without the MMD loss: `dora grid compression.debug`."""
from .._explorers import CompressionExplorer


@CompressionExplorer
def explorer(launcher):
    launcher.slurm_(gpus=0, mem_per_gpu=8, cpus_per_gpu=2, time=60)
    launcher.bind_(solver="compression/debug")
    launcher()
    launcher({"losses.mmd": 0.0})
