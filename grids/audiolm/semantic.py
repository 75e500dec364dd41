"""AudioLM's semantic stage, model size x dropout, on token shards given by the overrides:
`AUDIOGEN_LAB_GRID_OVERRIDES="datasource.train=... datasource.valid=... semantic_tokenizer_checkpoint=..."
dora grid audiolm.semantic`."""
from .._explorers import AudioLMExplorer


@AudioLMExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=40, cpus_per_gpu=8)
    launcher.bind_(solver="audiolm/semantic")
    for dim, depth, heads in ((768, 12, 12), (1024, 24, 16)):
        for dropout in (0.0, 0.1):
            launcher({"lm.dim": dim, "lm.depth": depth, "lm.heads": heads, "lm.dropout": dropout})
