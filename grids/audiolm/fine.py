"""AudioLM's fine stage, model size x auxiliary prefix loss, on token shards given by the overrides:
`AUDIOGEN_LAB_GRID_OVERRIDES="datasource.train=... datasource.valid=... compression_model_checkpoint=..."
dora grid audiolm.fine`."""
from .._explorers import AudioLMExplorer


@AudioLMExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=40, cpus_per_gpu=8)
    launcher.bind_(solver="audiolm/fine")
    for dim, depth, heads in ((768, 12, 12), (1024, 24, 16)):
        for prefix_loss_weight in (0.0, 0.1):
            launcher({"lm.dim": dim, "lm.depth": depth, "lm.heads": heads,
                      "audiolm.prefix_loss_weight": prefix_loss_weight})
