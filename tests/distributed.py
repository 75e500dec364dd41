"""Run a test body on several real gloo processes (loopback only, file rendezvous)."""
from __future__ import annotations

import os
from pathlib import Path
import typing as tp

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, body: tp.Callable[..., tp.Any], world: int, folder: str, args: tp.Tuple[tp.Any, ...]) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        # flashy asks Dora for the rank and world size, and Dora reads the launcher's environment:
        # point both at torch.distributed.
        import dora.distrib
        import flashy.distrib
        dora.distrib.rank = flashy.distrib.rank = lambda: dist.get_rank()
        dora.distrib.world_size = flashy.distrib.world_size = lambda: dist.get_world_size()
        result = body(rank, *args)
        torch.save(result, os.path.join(folder, f"rank{rank}.th"))
        dist.barrier()  # no rank tears its connections down while another still has collectives in flight
    finally:
        dist.destroy_process_group()


def run_ranks(body: tp.Callable[..., tp.Any], folder: tp.Union[str, Path], world: int = 2,
              args: tp.Tuple[tp.Any, ...] = ()) -> tp.List[tp.Any]:
    """What `body(rank, *args)` returns on each of `world` processes, in rank order.

    `body` must be a module-level function (it is pickled into the workers); `folder` holds the
    rendezvous file and the results.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mp.spawn(_entry, args=(body, world, str(folder), tuple(args)), nprocs=world, join=True)
    return [torch.load(folder / f"rank{rank}.th", weights_only=False) for rank in range(world)]
