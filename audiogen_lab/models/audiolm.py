"""AudioLM generation: semantic ids -> coarse RVQ levels -> fine RVQ levels -> audio through the codec.

Built from three trained stages (``//sig/SIG``, checkpoints or exports of ``solver=audiolm/...``) and the codec
their acoustic shards came from (the coarse stage's ``compression_model_checkpoint`` unless given). Each stage
samples exactly the tokens its step needs, constrained to the ids valid at each position (the level's codes;
never EOS nor a special id), so a stage cannot end early or emit a code of the wrong level:

1. semantic: ``duration * semantic_rate`` ids after BOS;
2. coarse: ``num_coarse`` levels for ``duration * codec.frame_rate`` frames after ``[BOS] semantic ids``;
3. fine: the remaining levels, window by window (the fine stage's training crop), each after
   ``[BOS] coarse levels of the window``.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch
from torch import nn

from ..modules.lm_transformer import LMTransformer
from .token_layout import AcousticLayout


@dataclass
class Stage:
    """A trained stage: its LM, its plan (layouts and joint vocabulary) and its training crop in seconds."""

    model: LMTransformer
    plan: tp.Any
    crop_seconds: tp.Optional[float]

    @property
    def target_offset(self) -> int:
        return self.plan.vocab.offset(self.plan.target_part)


def load_stage(source: str, device: tp.Union[str, torch.device] = "cpu") -> Stage:
    """The stage at `source` with its plan, read from the config stored with the weights."""
    from ..solvers.audiolm import AudioLMSolver, stage_plan
    from ..solvers.loading import read_package
    cfg = read_package(source).cfg
    model = AudioLMSolver.model_from_checkpoint(source, device=device)
    return Stage(model, stage_plan(cfg.audiolm), cfg.dataset.get("segment_duration"))


class AudioLM(nn.Module):
    """Three stages and a codec: :meth:`generate` returns audio ``[B, C, T]`` at the codec's rate.

    Args:
        semantic, coarse, fine: the stages (see :func:`load_stage`).
        codec: the compression model whose codes the acoustic stages model.
        semantic_rate: semantic ids per second (the semantic tokenizer's frame rate).
    """

    def __init__(self, semantic: Stage, coarse: Stage, fine: Stage, codec: nn.Module, semantic_rate: float) -> None:
        super().__init__()
        for name, stage, expected in (("semantic", semantic, None), ("coarse", coarse, "semantic"),
                                      ("fine", fine, "coarse")):
            prefix = stage.plan.prefix
            if (prefix is None) != (expected is None):
                raise ValueError(f"The {name} checkpoint is not a {name} stage.")
        if coarse.plan.prefix.cardinality != semantic.plan.target.cardinality:
            raise ValueError("The coarse stage was trained on another semantic vocabulary than the semantic stage.")
        if fine.plan.prefix.num_levels != coarse.plan.target.num_levels:
            raise ValueError("The fine stage's coarse levels differ from the coarse stage's.")
        self.semantic, self.coarse, self.fine = semantic, coarse, fine
        self.stages = nn.ModuleList([semantic.model, coarse.model, fine.model])
        self.codec = codec
        self.semantic_rate = float(semantic_rate)

    @classmethod
    def from_checkpoints(cls, semantic: str, coarse: str, fine: str, codec: tp.Optional[str] = None,
                         semantic_rate: tp.Optional[float] = None,
                         device: tp.Union[str, torch.device] = "cpu") -> "AudioLM":
        """Load the three stages and the codec (default: the coarse stage's ``compression_model_checkpoint``);
        the semantic rate defaults to that of the semantic stage's ``semantic_tokenizer_checkpoint``."""
        from ..solvers.loading import load_model, read_package
        coarse_cfg = read_package(coarse).cfg
        codec = codec or coarse_cfg.get("compression_model_checkpoint")
        if not codec:
            raise ValueError("Name the codec: the coarse stage's config has no compression_model_checkpoint.")
        if semantic_rate is None:
            tokenizer = read_package(semantic).cfg.get("semantic_tokenizer_checkpoint")
            if not tokenizer:
                raise ValueError("Give semantic_rate: the semantic stage's config names no semantic tokenizer.")
            from .semantic_tokenizer import load_semantic_tokenizer
            semantic_rate = load_semantic_tokenizer(str(tokenizer)).frame_rate
        model = load_model(str(codec), device=device, family="compression")
        return cls(load_stage(semantic, device), load_stage(coarse, device), load_stage(fine, device), model,
                   float(semantic_rate)).eval()

    # ------------------------------------------------------------------ sampling
    def _sample(self, stage: Stage, prompt: torch.Tensor, num_tokens: int, temperature: float,
                top_k: tp.Optional[int], generator: tp.Optional[torch.Generator]) -> torch.Tensor:
        """`num_tokens` target ids after `prompt`, constrained to the valid codes of each position; returned in
        the target layout's own ids (offset removed)."""
        offset, target = stage.target_offset, stage.plan.target

        def constrain(logits: torch.Tensor, step: int) -> torch.Tensor:
            if isinstance(target, AcousticLayout):
                return target.constrain_logits(logits, step, offset=offset, allow_eos=False)
            allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            allowed[offset:offset + target.cardinality] = True
            return logits.masked_fill(~allowed, float("-inf"))
        out = stage.model.generate(prompt, num_tokens, temperature=temperature, top_k=top_k, generator=generator,
                                   logits_processor=constrain)
        return out[:, prompt.shape[1]:] - offset

    @torch.no_grad()
    def generate(self, duration: float, num_samples: int = 1, temperature: float = 1.0,
                 top_k: tp.Optional[int] = None, seed: tp.Optional[int] = None) -> torch.Tensor:
        """Audio ``[num_samples, C, round(duration * frame_rate) * hop]`` sampled from scratch."""
        device = next(self.stages.parameters()).device
        generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
        semantic_frames = max(1, round(duration * self.semantic_rate))
        bos = torch.full((num_samples, 1), self.semantic.plan.target.bos_id, dtype=torch.long, device=device)
        semantic = self._sample(self.semantic, bos, semantic_frames, temperature, top_k, generator)

        coarse_plan = self.coarse.plan
        frames = max(1, round(duration * self.codec.frame_rate))
        prompt = torch.cat([torch.full_like(bos, coarse_plan.bos_id), semantic], dim=1)  # prefix part offset 0
        coarse_flat = self._sample(self.coarse, prompt, frames * coarse_plan.target.num_levels, temperature, top_k,
                                   generator)
        coarse = coarse_plan.target.unflatten(coarse_flat)  # [B, Kc, frames]

        fine_plan = self.fine.plan
        window = frames if self.fine.crop_seconds is None else max(1, round(self.fine.crop_seconds
                                                                            * self.codec.frame_rate))
        pieces = []
        for start in range(0, frames, window):
            part = coarse[..., start:start + window]
            prompt = torch.cat([torch.full_like(bos, fine_plan.bos_id), fine_plan.prefix.flatten(part)], dim=1)
            flat = self._sample(self.fine, prompt, part.shape[-1] * fine_plan.target.num_levels, temperature,
                                top_k, generator)
            pieces.append(fine_plan.target.unflatten(flat))
        codes = torch.cat([coarse, torch.cat(pieces, dim=-1)], dim=1)  # [B, K, frames]
        return self.codec.decode(codes, None)
