"""EnCodec-MMD at 32 kHz: sweep the MMD weight and the number of codebooks.

    dora grid compression.encodec_mmd            # schedule on SLURM
    dora grid compression.encodec_mmd --dry_run --init   # register the XPs only
"""
from audiogen_lab.environment import AudioGenEnvironment

from .._explorers import CompressionExplorer


@CompressionExplorer
def explorer(launcher):
    launcher.slurm_(gpus=4, partition=AudioGenEnvironment.get_slurm_partitions())
    launcher.bind_(solver="compression/encodec_mmd_32khz")
    for n_q in [4, 8]:
        sub = launcher.bind({"rvq.n_q": n_q})
        for weight in [0.0, 0.3, 1.0, 3.0]:
            sub({"losses.mmd": weight})
