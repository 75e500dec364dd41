"""Deterministic item plans shared by the datasets: which entry, and where in it, item `i` reads.

Every draw is a pure function of `(seed, epoch, index)`, so data order survives a resume and is the
same in every DataLoader worker and on every rank.

- `shuffle=True`: `num_samples` items per epoch; item `i` of epoch `e` draws an entry (weighted) and a
  position from `(seed, e, i)`.
- `shuffle=False`, `num_samples=None`: one item per entry, in order, at the entry's start.
- `shuffle=False`, `num_samples=N`: `N` items fixed across epochs, spread over the entries: a seeded
  permutation of the entries (cycled when `N` is larger) and a seeded position in each.
"""
import hashlib
import struct
import typing as tp

import torch

# Salts separating the streams drawn from one seed.
FIXED_SUBSET_SALT = 0x5eed_f1ed
CAPTION_SALT = 0xca_971_0


def item_seed(*values: int) -> int:
    """A 63-bit seed that depends only on `values` (stable across processes and platforms)."""
    digest = hashlib.blake2b(struct.pack(f'<{len(values)}q', *values), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2 ** 63 - 1)


def item_generator(*values: int) -> torch.Generator:
    """A CPU generator seeded from `values` only."""
    return torch.Generator().manual_seed(item_seed(*values))


class ItemPlan:
    """Maps a dataset index to `(entry, position)`, `position` in [0, 1) along the entry.

    Args:
        weights: sampling weight of each entry `[N]` (used when `shuffle`).
        shuffle: draw entries at random each epoch (see the module docstring).
        num_samples: items per epoch; None with `shuffle=False` means one item per entry.
        seed: base seed.
    """

    def __init__(self, weights: torch.Tensor, shuffle: bool, num_samples: tp.Optional[int], seed: int):
        if weights.dim() != 1 or weights.numel() == 0:
            raise ValueError(f"ItemPlan needs a non-empty 1-d weight vector, got shape {tuple(weights.shape)}.")
        if shuffle and num_samples is None:
            raise ValueError("A shuffled dataset needs num_samples (items per epoch).")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}.")
        self.weights = weights.double()
        self.shuffle = shuffle
        self.num_samples = num_samples
        self.seed = int(seed)
        self._order: tp.Optional[torch.Tensor] = None

    @property
    def num_entries(self) -> int:
        return self.weights.numel()

    def __len__(self) -> int:
        return self.num_samples if self.num_samples is not None else self.num_entries

    def fixed_epoch(self, epoch: int) -> int:
        """The epoch that draws depend on: `epoch` when shuffled, 0 otherwise (fixed items)."""
        return int(epoch) if self.shuffle else 0

    def pick(self, index: int, epoch: int, attempt: int = 0) -> tp.Tuple[int, float]:
        """Entry and position of item `index` in `epoch`, for read attempt `attempt` (0 first)."""
        if self.shuffle:
            rng = item_generator(self.seed, epoch, index, attempt)
            entry = int(torch.multinomial(self.weights, 1, generator=rng).item())
            return entry, float(torch.rand(1, generator=rng, dtype=torch.float64).item())
        if self.num_samples is None:
            return (index + attempt) % self.num_entries, 0.
        if self._order is None:
            self._order = torch.randperm(self.num_entries, generator=item_generator(self.seed, FIXED_SUBSET_SALT))
        entry = int(self._order[(index + attempt) % self.num_entries])
        rng = item_generator(self.seed, FIXED_SUBSET_SALT, index)
        return entry, float(torch.rand(1, generator=rng, dtype=torch.float64).item())


def choose(options: tp.Sequence[tp.Any], seed: int, epoch: int, index: int) -> tp.Any:
    """One of `options`, picked from `(seed, epoch, index)` (e.g. one caption among several)."""
    if not options:
        raise ValueError("Nothing to choose from.")
    if len(options) == 1:
        return options[0]
    rng = item_generator(seed, epoch, index, CAPTION_SALT)
    return options[int(torch.randint(len(options), (1,), generator=rng).item())]


def shard_indices(num_items: int, block_size: int = 1, rank: tp.Optional[int] = None,
                  world_size: tp.Optional[int] = None) -> tp.Iterator[int]:
    """The indices of `range(num_items)` that this rank and DataLoader worker read (iterable datasets).

    Indices go in blocks of `block_size` (set it to the per-rank batch size): block `b` goes to rank
    `b % world_size`, and a rank's `j`-th block to its worker `j % num_workers`. Every index is read
    exactly once; with `num_items = updates × batch_size × world_size` every rank gets `updates` full
    batches whatever the number of workers, and a DataLoader (which takes batches from its workers in
    turn) yields the rank's blocks in order. `rank` / `world_size` default to torch.distributed's when it
    is initialised, else 0 / 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    if world_size is None or rank is None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        rank = (dist.get_rank() if initialised else 0) if rank is None else rank
        world_size = (dist.get_world_size() if initialised else 1) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}.")
    worker = torch.utils.data.get_worker_info()
    worker_id, workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
    num_blocks = -(-num_items // block_size)
    for local, block in enumerate(range(rank, num_blocks, world_size)):
        if local % workers == worker_id:
            yield from range(block * block_size, min(num_items, (block + 1) * block_size))
