"""The CPU-sized MuLaN with each contrastive loss: `dora grid mulan.debug`."""
from .._explorers import MuLaNExplorer


@MuLaNExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, mem_per_gpu=8, cpus_per_gpu=4)
    launcher.bind_(solver="mulan/debug")
    for loss in ("softmax", "sigmoid"):
        launcher({"contrastive.loss": loss})
