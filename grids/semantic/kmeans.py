"""AudioLM's semantic tokenizer, vocabulary size x frame rate, on HuBERT features of the manifests given by the
overrides: `AUDIOGEN_LAB_GRID_OVERRIDES="semantic.hubert_checkpoint=... datasource.train=... datasource.valid=..."
dora grid semantic.kmeans`. Each XP's //sig/SIG names its tokenizer file."""
from .._explorers import SemanticKMeansExplorer


@SemanticKMeansExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, mem_per_gpu=40, cpus_per_gpu=8)
    launcher.bind_(solver="semantic/kmeans")
    for num_clusters in (512, 1024):
        for frame_rate in (25, 50):
            launcher({"semantic.num_clusters": num_clusters, "semantic.frame_rate": frame_rate})
