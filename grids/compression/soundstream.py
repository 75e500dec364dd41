"""SoundStream at 16 kHz (AudioLM's codec): sweep the quantizer family and the bottleneck transformer.

    dora grid compression.soundstream                    # schedule on SLURM
    dora grid compression.soundstream --dry_run --init   # register the XPs only
"""
from audiogen_lab.environment import AudioGenEnvironment

from .._explorers import CompressionExplorer


@CompressionExplorer
def explorer(launcher):
    launcher.slurm_(gpus=4, partition=AudioGenEnvironment.get_slurm_partitions())
    launcher.bind_(solver="compression/soundstream_16khz")
    for quantizer in ["rvq", "grvq", "rfsq"]:
        sub = launcher.bind({"soundstream.quantizer": quantizer})
        sub()
        sub({"soundstream_net.transformer.num_layers": 2})
