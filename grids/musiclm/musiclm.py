"""MusicLM's three stages, conditioning dropout 0.1 / 0.2, on token shards holding semantic/, acoustic/ and mulan/
(scripts/tokenize_dataset.py --mulan), given by the overrides:
`AUDIOGEN_LAB_GRID_OVERRIDES="datasource.train=tokens/train datasource.valid=tokens/valid
semantic_tokenizer_checkpoint=... compression_model_checkpoint=... mulan_checkpoint=..." dora grid musiclm.musiclm`."""
from .._explorers import AudioLMExplorer


@AudioLMExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=40, cpus_per_gpu=8)
    for stage in ("semantic", "coarse", "fine"):
        for cond_drop_prob in (0.1, 0.2):
            launcher({"solver": f"musiclm/{stage}", "audiolm.cond_drop_prob": cond_drop_prob})
