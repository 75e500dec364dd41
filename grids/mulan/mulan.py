"""MuLaN base recipe, contrastive loss x global batch size: `dora grid mulan.mulan`."""
from .._explorers import MuLaNExplorer


@MuLaNExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=40, cpus_per_gpu=8)
    launcher.bind_(solver="mulan/mulan_base")
    for loss in ("softmax", "sigmoid", "decoupled"):
        for batch_size in (256, 1024):  # global: the negatives of every rank are gathered
            launcher({"contrastive.loss": loss, "dataset.batch_size": batch_size})
