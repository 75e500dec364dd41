"""Decoder-only causal transformer over discrete tokens, with rotary positions and a KV cache.

The core of the hierarchical token language models of an AudioLM-style generator (semantic, coarse and
fine stages): tokens `[B, T]` -> next-token logits `[B, T, V]`, trained with cross-entropy and sampled
one token at a time with :meth:`LMTransformer.generate`.

Positions. Rotary position embeddings (RoPE, Su et al. 2021) rotate each query and key, pair of
channels by pair of channels, by an angle proportional to the token's absolute position, so that
their dot product depends only on the distance between the two tokens. The cos/sin table is built
lazily and grown when a longer sequence arrives; no `[T, T]` bias is ever built. The model looks the angles
up once per forward (a slice of the table when positions are consecutive, a gather otherwise) and every layer
rotates its queries and keys together with them.

Padding. `key_padding_mask [B, T]` (True = real token) lets one batch hold prompts of different lengths,
padded on the left. A token's position is the number of real tokens before it (prefix embeddings count
as real), so a left-padded prompt gets the positions it would have alone, and padded tokens are never
used as keys: its logits match those of the unpadded prompt. A padded query attends to itself only (so
that its softmax stays finite); its output carries no meaning and callers ignore it.

Cache. :class:`KVCache` holds, for each layer, key and value buffers preallocated to `max_length`
positions and filled in place at a write index, plus the padding mask and the next position of each
item. A forward with a cache processes only the new tokens: they attend causally to every cached
position and to each other, and their keys and values are appended.
"""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import feed_forward


def rotary_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angular frequencies `[head_dim // 2]` of the channel pairs: ``base ** (-2 i / head_dim)``."""
    if head_dim % 2:
        raise ValueError(f"Rotary embeddings need an even head dimension, got {head_dim}; change dim or heads.")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def apply_rotary_tables(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x [..., Dh]` with full-width tables (see :meth:`RotaryEmbedding.tables`) that broadcast to it:
    ``x * cos + swap_halves(x) * sin``, the same rotation as :func:`apply_rotary` in fewer operations."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.addcmul(x * cos, torch.cat((x2, x1), dim=-1), sin)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys `x [B, H, T, Dh]` by the angles whose `cos`, `sin` are `[B or 1, T, Dh/2]`.

    Channel `i` of the first half is paired with channel `i` of the second half, and the pair is
    rotated by the angle of frequency `i`.
    """
    cos = rearrange(cos, "b t f -> b 1 t f").to(x.dtype)
    sin = rearrange(sin, "b t f -> b 1 t f").to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RotaryEmbedding(nn.Module):
    """Lazily grown cos/sin table of rotary position embeddings for heads of width `head_dim`.

    Args:
        head_dim: width of one attention head (even).
        base: wavelength base of the frequencies.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rotary_frequencies(head_dim, base).float(), persistent=False)
        self.register_buffer("cos_table", torch.empty(0, head_dim // 2), persistent=False)
        self.register_buffer("sin_table", torch.empty(0, head_dim // 2), persistent=False)

        # full-width tables [size, Dh]: cos on both halves, and -sin, sin (see `tables`), per dtype
        self._full: tp.Dict[torch.dtype, tp.Tuple[torch.Tensor, torch.Tensor]] = {}

    def _grow(self, length: int) -> None:
        if length <= self.cos_table.shape[0] and self.cos_table.device == self.inv_freq.device:
            return
        size = max(length, 2 * self.cos_table.shape[0], 64)
        with torch.inference_mode(False):  # grown during generate: the tables must stay usable in training
            angles = torch.outer(torch.arange(size, device=self.inv_freq.device, dtype=torch.float32),
                                 self.inv_freq)
            self.cos_table, self.sin_table = angles.cos(), angles.sin()
        self._full = {}

    def tables(self, positions: tp.Union[torch.Tensor, int], num: int, bound: int, dtype: torch.dtype
               ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Full-width `(cos, sin)`, each `[B or 1, T, Dh]` in `dtype`, for :func:`apply_rotary_tables`.

        `cos` repeats the angles' cosines on both halves, `sin` holds ``-sin`` then ``sin``. `positions` is
        a `[B or 1, T]` long tensor, or an int `p` for the `num` consecutive positions ``p, ..., p + num - 1``
        (a slice of the table, no gather); every position is below the Python int `bound`.
        """
        self._grow(bound)
        full = self._full.get(dtype)
        if full is None or full[0].device != self.cos_table.device:
            cos, sin = self.cos_table, self.sin_table
            with torch.inference_mode(False):
                full = (torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype))
            self._full[dtype] = full
        if isinstance(positions, int):
            return full[0][None, positions:positions + num], full[1][None, positions:positions + num]
        return full[0][positions], full[1][positions]

    def _apply(self, fn, recurse: bool = True):  # .to(device) / .half(): rebuild the full tables lazily
        self._full = {}
        return super()._apply(fn, recurse)

    def forward(self, positions: torch.Tensor, bound: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`positions [B or 1, T]` long, each `< bound` -> `(cos, sin)`, each `[B or 1, T, Dh/2]` fp32.

        `bound` is a Python int so that growing the table never needs to read `positions` back.
        """
        self._grow(bound)
        return self.cos_table[positions], self.sin_table[positions]


@dataclass
class LayerCache:
    """Keys and values of one attention layer, `[B, H, max_length, Dh]`, valid up to `length`."""
    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Write `k, v [B, H, T, Dh]` at the write index; return all keys and values so far `[B, H, S, Dh]`."""
        end = self.length + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions but {end} are needed; "
                             "create the cache with a larger max_length.")
        if k.shape[0] != self.keys.shape[0]:
            raise ValueError(f"KV cache was created for batch {self.keys.shape[0]}, got batch {k.shape[0]}.")
        self.keys.narrow(2, self.length, k.shape[2]).copy_(k)  # in place, no indexing machinery
        self.values.narrow(2, self.length, v.shape[2]).copy_(v)
        self.length = end
        return self.keys.narrow(2, 0, end), self.values.narrow(2, 0, end)


@dataclass
class KVCache:
    """State of an incremental decoding: one :class:`LayerCache` per layer, and per-item bookkeeping.

    Attributes:
        layers: the caches of the attention layers, in order.
        max_length: number of positions preallocated.
        key_padding_mask: `[B, max_length]` bool, True on real tokens (valid up to `length`).
        next_position: `[B]` long, rotary position of each item's next real token.
        has_padding: whether a key-padding mask was ever given (then the mask is applied at each step).
    """
    layers: tp.List[LayerCache]
    max_length: int
    key_padding_mask: torch.Tensor
    next_position: torch.Tensor
    has_padding: bool = False

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        return self.layers[0].length


def causal_mask(num_queries: int, num_keys: int, key_padding_mask: tp.Optional[torch.Tensor],
                device: torch.device) -> torch.Tensor:
    """Bool attention mask (True = may attend), `[1 or B, 1, Tq, S]`, for the last `Tq` of `S` positions.

    Query `i` sits at absolute index ``S - Tq + i`` and sees the keys at or before it (causal
    alignment to the lower right). With `key_padding_mask [B, S]`, padded keys are hidden except from
    themselves, so that a padded query keeps one key to attend to.
    """
    query_index = torch.arange(num_keys - num_queries, num_keys, device=device)[:, None]
    key_index = torch.arange(num_keys, device=device)[None, :]
    allowed = key_index <= query_index  # [Tq, S]
    if key_padding_mask is None:
        return rearrange(allowed, "q s -> 1 1 q s")
    visible = rearrange(key_padding_mask, "b s -> b 1 s") | (key_index == query_index)
    return rearrange(allowed & visible, "b q s -> b 1 q s")


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention `[B, T, D] -> [B, T, D]` with rotary positions and a KV cache.

    Args:
        dim: model width `D`.
        heads: attention heads; must divide `dim`, and `dim // heads` must be even.
        dropout: dropout on the attention weights and on the output projection (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}.")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.out_dropout = nn.Dropout(dropout)
        self.rotary = RotaryEmbedding(self.head_dim)

    def new_cache(self, batch: int, max_length: int, device: tp.Optional[torch.device] = None,
                  dtype: tp.Optional[torch.dtype] = None) -> LayerCache:
        """Empty cache for `batch` sequences of up to `max_length` positions."""
        shape = (batch, self.heads, max_length, self.head_dim)
        return LayerCache(keys=torch.zeros(shape, device=device, dtype=dtype),
                          values=torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, cache: tp.Optional[LayerCache] = None,
                key_padding_mask: tp.Optional[torch.Tensor] = None,
                positions: tp.Optional[torch.Tensor] = None,
                rotary: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """Attend from the new tokens to themselves and to the cached ones.

        Args:
            x: new tokens `[B, T, D]`, following the `cache.length` cached ones (0 without a cache).
            cache: keys and values of the previous tokens; the new ones are appended to it in place.
            key_padding_mask: `[B, S]` bool over all `S = cache.length + T` positions, True on real tokens.
            positions: rotary positions `[B or 1, T]` long, each below `S`; by default the indices
                ``cache.length + arange(T)``.
            rotary: the full-width tables `(cos, sin)`, each `[B or 1, T, Dh]`, of the positions (from
                :meth:`RotaryEmbedding.tables`, shared by the layers of a model); `positions` is then unused.
        Returns:
            `[B, T, D]`.
        """
        offset = 0 if cache is None else cache.length
        batch, num_new = x.shape[:2]
        qkv = self.to_qkv(x).view(batch, num_new, 3, self.heads, self.head_dim)
        if rotary is None:
            rotary = self.rotary.tables(offset if positions is None else positions, num_new, offset + num_new,
                                        qkv.dtype)
        cos, sin = (table[:, :, None, None].to(qkv.dtype) for table in rotary)  # [B or 1, T, 1, 1, Dh]
        qk, v = qkv.split((2, 1), dim=2)
        q, k = apply_rotary_tables(qk, cos, sin).unbind(2)  # queries and keys rotated together
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v[:, :, 0].transpose(1, 2)  # [B, H, T, Dh]
        if cache is not None:
            k, v = cache.append(k, v)
        num_keys = k.shape[2]
        if key_padding_mask is not None and key_padding_mask.shape != (x.shape[0], num_keys):
            raise ValueError(f"key_padding_mask must have shape [B, S] = {(x.shape[0], num_keys)} "
                             f"(cached plus new positions), got {tuple(key_padding_mask.shape)}.")
        attn_mask, is_causal = None, False
        if key_padding_mask is not None or num_new not in (1, num_keys):
            attn_mask = causal_mask(num_new, num_keys, key_padding_mask, x.device)
        elif num_new == num_keys:
            is_causal = num_new > 1  # square case: SDPA's top-left alignment is the causal one.
        # else: a single new query sees every cached key, no mask needed.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_dropout(self.to_out(rearrange(out, "b h t d -> b t (h d)")))


class CausalBlock(nn.Module):
    """Pre-norm block `[B, T, D] -> [B, T, D]`: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (GELU MLP)."""

    def __init__(self, dim: int, heads: int, ff_mult: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout=dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = feed_forward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, positions: tp.Optional[torch.Tensor], cache: tp.Optional[LayerCache] = None,
                key_padding_mask: tp.Optional[torch.Tensor] = None,
                rotary: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """`x [B, T, D]`, `positions [B or 1, T]`; cache, mask and rotary tables as in
        :class:`CausalSelfAttention`."""
        x = x + self.attn(self.attn_norm(x), cache=cache, key_padding_mask=key_padding_mask, positions=positions,
                          rotary=rotary)
        return x + self.ff(self.ff_norm(x))


def guided_logits(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of stacked rows: ``[2B, ..., V]`` (conditional rows first, then the null ones)
    -> ``null + scale * (cond - null)`` ``[B, ..., V]``; in fp32."""
    if logits.shape[0] % 2:
        raise ValueError(f"Guided logits stack conditional and null rows: an even batch is needed, got "
                         f"{logits.shape[0]}.")
    cond, null = logits.float().chunk(2, dim=0)
    return null + scale * (cond - null)


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: tp.Optional[int] = None,
                      generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw one token per row of `logits [B, V]` -> `[B]` long.

    `temperature == 0` takes the argmax. Otherwise the logits are divided by `temperature`, all but the
    `top_k` largest are discarded (ties with the k-th are kept), and a token is drawn with `generator`
    (on the device of `logits`; the global generator when None).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be a positive number of tokens (or None), got {top_k}.")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


class LMTransformer(nn.Module):
    """Decoder-only language model: tokens `[B, T]` (after optional prefix embeddings) -> logits `[B, T, V]`.

    Token embedding, `depth` pre-norm :class:`CausalBlock`, final LayerNorm, untied output head.
    The embedding is drawn with std 0.02 and the head with std ``0.02 / sqrt(dim)`` (logits of std
    about 0.02), so the first cross-entropy on any tokens is close to ``ln(vocab_size)``.

    Args:
        vocab_size: number of token values `V`.
        dim: model width `D`.
        depth: number of blocks.
        heads: attention heads; must divide `dim`, with `dim // heads` even.
        ff_mult: hidden width of the MLP, as a multiple of `dim`.
        dropout: dropout in attention and MLP (training only).
        max_length: longest sequence accepted (prefix and tokens together); default size of new caches.
    """

    def __init__(self, vocab_size: int, dim: int = 512, depth: int = 8, heads: int = 8, ff_mult: float = 4.0,
                 dropout: float = 0.0, max_length: int = 4096) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        if (dim // heads) % 2:
            raise ValueError(f"dim // heads = {dim // heads} must be even for rotary positions; change dim or heads.")
        self.vocab_size = vocab_size
        self.dim = dim
        self.max_length = max_length
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList([CausalBlock(dim, heads, ff_mult, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        nn.init.normal_(self.token_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02 / math.sqrt(dim))

    def new_cache(self, batch: int, max_length: tp.Optional[int] = None, device: tp.Optional[torch.device] = None,
                  dtype: tp.Optional[torch.dtype] = None) -> KVCache:
        """Empty :class:`KVCache` for `batch` sequences of up to `max_length` positions (default: the model's).

        `device` and `dtype` default to those of the model's parameters.
        """
        max_length = self.max_length if max_length is None else max_length
        if max_length > self.max_length:
            raise ValueError(f"Cache max_length={max_length} exceeds the model's max_length={self.max_length}.")
        param = self.token_emb.weight
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        return KVCache(layers=[block.attn.new_cache(batch, max_length, device, dtype) for block in self.blocks],
                       max_length=max_length,
                       key_padding_mask=torch.ones(batch, max_length, dtype=torch.bool, device=device),
                       next_position=torch.zeros(batch, dtype=torch.long, device=device))

    def forward(self, tokens: torch.Tensor, cache: tp.Optional[KVCache] = None,
                prefix_embeddings: tp.Optional[torch.Tensor] = None,
                key_padding_mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits for every position of ``[prefix, tokens]``.

        Args:
            tokens: `[B, T]` long token values in `[0, V)`.
            cache: state of the previous positions; the new ones attend to them and are appended in place.
            prefix_embeddings: `[B, P, D]` conditioning vectors already embedded (e.g. a MuLaN embedding
                projected to `D`), placed before the tokens; always treated as real tokens.
            key_padding_mask: `[B, T]` bool over `tokens`, True on real tokens (left padding of prompts).
                With a cache it is remembered for later calls, whose tokens count as real by default.
        Returns:
            `[B, P + T, V]`: the logits at position `i` predict the token at `i + 1`, so those at the last
            prefix position predict `tokens[:, 0]`.
        """
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a [B, T] long tensor, got {tuple(tokens.shape)} {tokens.dtype}.")
        batch = tokens.shape[0]
        if key_padding_mask is not None and (key_padding_mask.dtype != torch.bool
                                             or key_padding_mask.shape != tokens.shape):
            raise ValueError(f"key_padding_mask must be a bool tensor of shape {tuple(tokens.shape)} like tokens, "
                             f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}.")
        x = self.token_emb(tokens)
        if prefix_embeddings is not None:
            if prefix_embeddings.dim() != 3 or prefix_embeddings.shape[0] != batch \
                    or prefix_embeddings.shape[2] != self.dim:
                raise ValueError(f"prefix_embeddings must be [B, P, D] with B={batch}, D={self.dim}, "
                                 f"got {tuple(prefix_embeddings.shape)}.")
            x = torch.cat([prefix_embeddings.to(x.dtype), x], dim=1)
            if key_padding_mask is not None:
                real = key_padding_mask.new_ones(batch, prefix_embeddings.shape[1])
                key_padding_mask = torch.cat([real, key_padding_mask], dim=1)
        num_new = x.shape[1]
        offset = 0 if cache is None else cache.length
        if offset + num_new > self.max_length:
            raise ValueError(f"Sequence of {offset + num_new} positions exceeds max_length={self.max_length}; "
                             "build the model with a larger max_length.")
        # rotary positions: an int for the consecutive positions offset, offset + 1, ... of every item
        positions: tp.Union[int, torch.Tensor]
        if cache is None:
            full_mask = key_padding_mask
            if key_padding_mask is None:
                positions = 0
            else:
                positions = (key_padding_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        else:
            if offset + num_new > cache.max_length:
                raise ValueError(f"KV cache holds {cache.max_length} positions but {offset + num_new} are needed; "
                                 "create the cache with a larger max_length.")
            if cache.key_padding_mask.shape[0] != batch:
                raise ValueError(f"KV cache was created for batch {cache.key_padding_mask.shape[0]}, got {batch}.")
            if key_padding_mask is None:
                # without padding so far, every item's next position is the cache length
                positions = (cache.next_position[:, None] + torch.arange(num_new, device=x.device)
                             if cache.has_padding else offset)
                cache.next_position += num_new
            else:
                cache.has_padding = True
                cache.key_padding_mask[:, offset:offset + num_new] = key_padding_mask
                positions = cache.next_position[:, None] + key_padding_mask.long().cumsum(dim=1) - 1
                positions = positions.clamp(min=0)
                cache.next_position += key_padding_mask.sum(dim=1)
            full_mask = cache.key_padding_mask[:, :offset + num_new] if cache.has_padding else None
        rotary = self.blocks[0].attn.rotary.tables(positions, num_new, offset + num_new, x.dtype)
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache.layers[i]
            x = block(x, None, cache=layer_cache, key_padding_mask=full_mask, rotary=rotary)
        return self.head(self.norm(x))

    def generate(self, prompt: torch.Tensor, num_tokens: int, temperature: float = 1.0,
                 top_k: tp.Optional[int] = None, use_cache: bool = True,
                 generator: tp.Optional[torch.Generator] = None,
                 logits_processor: tp.Optional[tp.Callable[[torch.Tensor, int], torch.Tensor]] = None,
                 prefix_embeddings: tp.Optional[torch.Tensor] = None,
                 key_padding_mask: tp.Optional[torch.Tensor] = None,
                 guidance_scale: tp.Optional[float] = None) -> torch.Tensor:
        """Continue `prompt [B, T0]` by `num_tokens` tokens -> `[B, T0 + num_tokens]` (prompt included).

        Call `eval()` first: dropout stays active in training mode.

        Args:
            prompt: `[B, T0]` long; may be empty (`T0 = 0`) when `prefix_embeddings` are given.
            num_tokens: tokens to generate.
            temperature: softmax temperature; 0 takes the argmax (greedy).
            top_k: sample among the `top_k` most likely tokens only (None = all).
            use_cache: decode incrementally with a :class:`KVCache`; False recomputes the whole sequence
                at each step (slow reference, same result).
            generator: random generator for sampling, on the model's device.
            logits_processor: ``f(logits [B, V], step) -> logits [B, V]`` applied before sampling
                (e.g. to forbid tokens); `step` counts generated tokens from 0.
            prefix_embeddings: `[B, P, D]` conditioning placed before the prompt (see :meth:`forward`).
            key_padding_mask: `[B, T0]` bool, True on real prompt tokens (prompts padded on the left).
            guidance_scale: classifier-free guidance. `prefix_embeddings` is then `[2B, P, D]`, the conditional
                prefixes then the null ones; each step runs the prompt under both in one batch of `2B` rows
                sharing a KV cache, samples from :func:`guided_logits` and feeds the token to both rows.

        Runs under `torch.inference_mode` (`logits_processor` too); the returned tokens are an ordinary tensor.
        """
        with torch.inference_mode():
            out = self._generate(prompt, num_tokens, temperature, top_k, use_cache, generator, logits_processor,
                                 prefix_embeddings, key_padding_mask, guidance_scale)
        return out.clone()  # not an inference tensor: usable as training input

    def _generate(self, prompt: torch.Tensor, num_tokens: int, temperature: float, top_k: tp.Optional[int],
                  use_cache: bool, generator: tp.Optional[torch.Generator],
                  logits_processor: tp.Optional[tp.Callable[[torch.Tensor, int], torch.Tensor]],
                  prefix_embeddings: tp.Optional[torch.Tensor], key_padding_mask: tp.Optional[torch.Tensor],
                  guidance_scale: tp.Optional[float] = None) -> torch.Tensor:
        batch, prompt_length = prompt.shape
        guided = guidance_scale is not None

        def rows(t: torch.Tensor) -> torch.Tensor:  # the conditional rows, then the null ones under guidance
            return torch.cat([t, t]) if guided else t
        num_prefix = 0 if prefix_embeddings is None else prefix_embeddings.shape[1]
        if prompt_length + num_prefix == 0:
            raise ValueError("generate needs a non-empty prompt or prefix_embeddings to start from.")
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}.")
        # The last generated token is never fed back to the model.
        total = num_prefix + prompt_length + max(num_tokens - 1, 0)
        if total > self.max_length:
            raise ValueError(f"Prefix, prompt and generated tokens need {total} positions, more than "
                             f"max_length={self.max_length}; shorten the request or raise max_length.")
        out = [prompt]
        if num_tokens == 0:
            return prompt
        if guided and (prefix_embeddings is None or prefix_embeddings.shape[0] != 2 * batch):
            raise ValueError("guidance_scale needs prefix_embeddings of 2B rows: the conditional prefixes, then the "
                             "null ones.")
        cache = self.new_cache((2 if guided else 1) * batch, total) if use_cache else None
        mask = None if key_padding_mask is None else rows(key_padding_mask)
        logits = self(rows(prompt), cache=cache, prefix_embeddings=prefix_embeddings, key_padding_mask=mask)
        for step in range(num_tokens):
            if step > 0:
                if use_cache:
                    logits = self(rows(out[-1]), cache=cache)
                else:
                    if key_padding_mask is not None:
                        mask = rows(torch.cat([key_padding_mask, key_padding_mask.new_ones(batch, step)], dim=1))
                    logits = self(rows(torch.cat(out, dim=1)), prefix_embeddings=prefix_embeddings,
                                  key_padding_mask=mask)
            next_logits = guided_logits(logits[:, -1], guidance_scale) if guided else logits[:, -1]
            if logits_processor is not None:
                next_logits = logits_processor(next_logits, step)
            out.append(sample_next_token(next_logits, temperature, top_k, generator)[:, None])
        return torch.cat(out, dim=1)
