"""A token LM conditioned on MuLaN tokens (MusicLM): conditioning vectors are prepended to every row.

:class:`ConditionedLM` wraps an :class:`~audiogen_lab.modules.lm_transformer.LMTransformer` and owns the
embedding table of the conditioning tokens it reads (a :class:`~audiogen_lab.quantization.mulan_embed.
NamespacedConditioning` holding the one namespace of its stage: ``semantic``, ``coarse`` or ``fine``), so the
table is trained by the LM's optimizer, saved in the LM's checkpoint under that namespace, and read back by
the same stage at inference. A learned null prefix stands for "no conditioning": rows whose conditioning is
dropped in training (classifier-free guidance) and the unconditional rows of guided sampling use it.

Classifier-free guidance is batched: the conditional and the null rows go through one forward pass
(``[2B, ...]``) and the next-token logits are ``null + scale * (cond - null)``.
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn

from ..modules.lm_transformer import LMTransformer, guided_logits
from ..quantization.mulan_embed import NamespacedConditioning


class ConditionedLM(nn.Module):
    """`lm` with a prefix of `num_levels` conditioning vectors: ``forward(tokens [B, T], cond [B, L])`` ->
    logits ``[B, T, V]`` for the token positions (the prefix positions are dropped).

    Args:
        lm: the token model; its width is that of the conditioning vectors.
        num_levels: conditioning tokens per row `L` (MuLaN quantizer levels).
        codebook_size: values of each conditioning token.
        namespace: the stage owning the table (``semantic``, ``coarse`` or ``fine``).
    """

    def __init__(self, lm: LMTransformer, num_levels: int, codebook_size: int, namespace: str) -> None:
        super().__init__()
        self.lm = lm
        self.namespace = namespace
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.conditioning = NamespacedConditioning([namespace], num_levels, codebook_size, lm.dim)
        for table in self.conditioning.tables.values():
            nn.init.normal_(table.embedding.weight, std=0.02)
        self.null = nn.Parameter(torch.randn(num_levels, lm.dim) * 0.02)

    @property
    def vocab_size(self) -> int:
        return self.lm.vocab_size

    @property
    def dim(self) -> int:
        return self.lm.dim

    def prefix(self, cond: tp.Optional[torch.Tensor], drop: tp.Optional[torch.Tensor] = None,
               batch: tp.Optional[int] = None) -> torch.Tensor:
        """Conditioning vectors ``[B, L, D]`` of tokens `cond` ``[B, L]`` (long); rows where `drop` ``[B]`` (bool)
        is True, and every row when `cond` is None (then `batch` rows), get the null prefix."""
        if cond is None:
            if batch is None:
                raise ValueError("Pass the batch size when no conditioning tokens are given.")
            return self.null[None].expand(batch, -1, -1)
        if cond.dim() != 2 or cond.shape[1] != self.num_levels:
            raise ValueError(f"Conditioning tokens must be [B, {self.num_levels}] (the levels this {self.namespace} "
                             f"stage was trained with), got {tuple(cond.shape)}.")
        vectors = self.conditioning(cond, self.namespace)
        if drop is not None:
            vectors = torch.where(drop[:, None, None], self.null[None].to(vectors.dtype), vectors)
        return vectors

    def forward(self, tokens: torch.Tensor, cond: tp.Optional[torch.Tensor] = None,
                drop: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` of `tokens` ``[B, T]`` after the prefix of `cond` ``[B, L]`` (None: null prefix);
        position `t` predicts token `t + 1`, as for the unconditioned model."""
        prefix = self.prefix(cond, drop, batch=tokens.shape[0])
        return self.lm(tokens, prefix_embeddings=prefix)[:, prefix.shape[1]:]

    def guided_forward(self, tokens: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Guided logits ``[B, T, V]`` (fp32) from one forward pass over the conditional and null rows."""
        both = torch.cat([self.prefix(cond), self.prefix(None, batch=cond.shape[0])])
        logits = self.lm(torch.cat([tokens, tokens]), prefix_embeddings=both)[:, both.shape[1]:]
        return guided_logits(logits, scale)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, num_tokens: int, cond: tp.Optional[torch.Tensor] = None,
                 cfg_scale: tp.Optional[float] = None, temperature: float = 1.0, top_k: tp.Optional[int] = None,
                 generator: tp.Optional[torch.Generator] = None,
                 logits_processor: tp.Optional[tp.Callable[[torch.Tensor, int], torch.Tensor]] = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Continue `prompt` ``[B, T0]`` by `num_tokens` tokens -> ``[B, T0 + num_tokens]``.

        `cond` ``[B, L]`` conditions every row (None: the null prefix, i.e. unconditional sampling). With
        `cfg_scale` (and `cond`), each step runs the conditional and null rows in one batch of ``2B`` rows
        sharing a KV cache and samples from the guided logits; the same token is fed to both rows.
        Other arguments as in :meth:`LMTransformer.generate`.
        """
        batch = prompt.shape[0]
        if cond is None or cfg_scale is None or cfg_scale == 1.0:
            return self.lm.generate(prompt, num_tokens, temperature=temperature, top_k=top_k, use_cache=use_cache,
                                    generator=generator, logits_processor=logits_processor,
                                    prefix_embeddings=self.prefix(cond, batch=batch))
        prefix = torch.cat([self.prefix(cond), self.prefix(None, batch=batch)])
        return self.lm.generate(prompt, num_tokens, temperature=temperature, top_k=top_k, use_cache=use_cache,
                                generator=generator, logits_processor=logits_processor, prefix_embeddings=prefix,
                                guidance_scale=cfg_scale)
