"""AudioLM and MusicLM generation: semantic ids -> coarse RVQ levels -> fine RVQ levels -> audio through the codec.

Built from three trained stages (``//sig/SIG``, checkpoints or exports of ``solver=audiolm/...``) and the codec
their acoustic shards came from (the coarse stage's ``compression_model_checkpoint`` unless given). Each stage
samples exactly the tokens its step needs, constrained to the ids valid at each position (the level's codes;
never EOS nor a special id), so a stage cannot end early or emit a code of the wrong level:

1. semantic: ``duration * semantic_rate`` ids after BOS;
2. coarse: ``num_coarse`` levels for ``duration * codec.frame_rate`` frames after ``[BOS] semantic ids``;
3. fine: the remaining levels, window by window (the fine stage's training crop), each after
   ``[BOS] coarse levels of the window``.

A prompt (``prompt_wave``) is tokenized by the semantic tokenizer and the codec; its ids and codes start the
semantic and coarse sequences, its fine levels are kept, and the returned audio (``duration`` seconds in all)
begins with the prompt's reconstruction.

Conditioned stages (:class:`~audiogen_lab.models.conditioned_lm.ConditionedLM`, trained with
``audiolm.conditioning: mulan``) read conditioning tokens ``[B, L]`` through their own table, under their own
namespace; each stage must be used in the role it was trained for. With ``cfg`` the conditional and null rows
are sampled in one batch (classifier-free guidance). :class:`MusicLM` gets the tokens from texts through a
MuLaN conditioner, draws ``num_candidates`` samples per request and keeps the one whose MuLaN audio embedding
is closest to the text's.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch
from torch import nn

import torch.nn.functional as F

from ..modules.lm_transformer import LMTransformer
from .conditioned_lm import ConditionedLM
from .token_layout import AcousticLayout


@dataclass
class Stage:
    """A trained stage: its LM, its plan (layouts and joint vocabulary) and its training crop in seconds."""

    model: tp.Union[LMTransformer, ConditionedLM]
    plan: tp.Any
    crop_seconds: tp.Optional[float]

    @property
    def target_offset(self) -> int:
        return self.plan.vocab.offset(self.plan.target_part)

    @property
    def conditioned(self) -> bool:
        return isinstance(self.model, ConditionedLM)


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
        semantic_tokenizer: the tokenizer of the semantic shards; needed only for `prompt_wave`.
    """

    def __init__(self, semantic: Stage, coarse: Stage, fine: Stage, codec: nn.Module, semantic_rate: float,
                 semantic_tokenizer: tp.Optional[nn.Module] = None) -> None:
        super().__init__()
        for name, stage, expected in (("semantic", semantic, None), ("coarse", coarse, "semantic"),
                                      ("fine", fine, "coarse")):
            prefix = stage.plan.prefix
            if (prefix is None) != (expected is None):
                raise ValueError(f"The {name} checkpoint is not a {name} stage.")
            if stage.conditioned and stage.model.namespace != name:  # type: ignore[union-attr]
                raise ValueError(f"The {name} stage's conditioning table was trained under the "
                                 f"{stage.model.namespace!r} namespace: use each stage in its own role.")
        if coarse.plan.prefix.cardinality != semantic.plan.target.cardinality:
            raise ValueError("The coarse stage was trained on another semantic vocabulary than the semantic stage.")
        if fine.plan.prefix.num_levels != coarse.plan.target.num_levels:
            raise ValueError("The fine stage's coarse levels differ from the coarse stage's.")
        self.semantic, self.coarse, self.fine = semantic, coarse, fine
        self.stages = nn.ModuleList([semantic.model, coarse.model, fine.model])
        self.codec = codec
        self.semantic_rate = float(semantic_rate)
        self.semantic_tokenizer = semantic_tokenizer

    @staticmethod
    def _load_parts(semantic: str, coarse: str, fine: str, codec: tp.Optional[str], semantic_rate: tp.Optional[float],
                    device: tp.Union[str, torch.device]) -> tp.Dict[str, tp.Any]:
        from ..solvers.loading import load_model, read_package
        coarse_cfg = read_package(coarse).cfg
        codec = codec or coarse_cfg.get("compression_model_checkpoint")
        if not codec:
            raise ValueError("Name the codec: the coarse stage's config has no compression_model_checkpoint.")
        tokenizer_path = read_package(semantic).cfg.get("semantic_tokenizer_checkpoint")
        tokenizer = None
        if tokenizer_path:
            from .semantic_tokenizer import load_semantic_tokenizer
            tokenizer = load_semantic_tokenizer(str(tokenizer_path)).to(device)
        if semantic_rate is None:
            if tokenizer is None:
                raise ValueError("Give semantic_rate: the semantic stage's config names no semantic tokenizer.")
            semantic_rate = tokenizer.frame_rate
        return dict(semantic=load_stage(semantic, device), coarse=load_stage(coarse, device),
                    fine=load_stage(fine, device), codec=load_model(str(codec), device=device, family="compression"),
                    semantic_rate=float(semantic_rate), semantic_tokenizer=tokenizer)

    @classmethod
    def from_checkpoints(cls, semantic: str, coarse: str, fine: str, codec: tp.Optional[str] = None,
                         semantic_rate: tp.Optional[float] = None,
                         device: tp.Union[str, torch.device] = "cpu") -> "AudioLM":
        """Load the three stages and the codec (default: the coarse stage's ``compression_model_checkpoint``);
        the semantic rate defaults to that of the semantic stage's ``semantic_tokenizer_checkpoint``."""
        return cls(**cls._load_parts(semantic, coarse, fine, codec, semantic_rate, device)).eval()

    # ------------------------------------------------------------------ sampling
    def _sample(self, stage: Stage, prompt: torch.Tensor, num_tokens: int, temperature: float,
                top_k: tp.Optional[int], generator: tp.Optional[torch.Generator],
                cond: tp.Optional[torch.Tensor] = None, cfg: tp.Optional[float] = None) -> torch.Tensor:
        """`num_tokens` target ids after `prompt`, constrained to the valid codes of each position; returned in
        the target layout's own ids (offset removed). A conditioned stage reads the first levels of `cond`
        ``[B, L]`` it was trained with (None: its null prefix); `cfg` is the guidance scale."""
        offset, target = stage.target_offset, stage.plan.target

        def constrain(logits: torch.Tensor, step: int) -> torch.Tensor:
            if isinstance(target, AcousticLayout):
                return target.constrain_logits(logits, step, offset=offset, allow_eos=False)
            allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            allowed[offset:offset + target.cardinality] = True
            return logits.masked_fill(~allowed, float("-inf"))
        if isinstance(stage.model, ConditionedLM):
            levels = stage.model.num_levels
            if cond is not None and cond.shape[1] < levels:
                raise ValueError(f"The stage reads {levels} conditioning levels, only {cond.shape[1]} were given.")
            out = stage.model.generate(prompt, num_tokens, cond=None if cond is None else cond[:, :levels],
                                       cfg_scale=cfg, temperature=temperature, top_k=top_k, generator=generator,
                                       logits_processor=constrain)
        else:
            out = stage.model.generate(prompt, num_tokens, temperature=temperature, top_k=top_k,
                                       generator=generator, logits_processor=constrain)
        return out[:, prompt.shape[1]:] - offset

    def _tokenize_prompt(self, wav: torch.Tensor, sample_rate: int, num_samples: int
                         ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Semantic ids ``[B, Ts]`` and codes ``[B, K, Ta]`` of a prompt ``[C, T]`` or ``[B, C, T]``."""
        from ..data.audio_utils import convert_audio
        if self.semantic_tokenizer is None:
            raise ValueError("A prompt needs the semantic tokenizer: the semantic stage's config names none "
                             "(semantic_tokenizer_checkpoint).")
        if getattr(self.semantic_tokenizer, "dedup", False):
            raise ValueError("Prompts need a semantic tokenizer without dedup: de-duplicated ids have no fixed rate.")
        wav = wav[None] if wav.dim() == 2 else wav
        if wav.dim() != 3 or wav.shape[0] not in (1, num_samples):
            raise ValueError(f"prompt_wave must be [C, T] or [{num_samples}, C, T], got {tuple(wav.shape)}.")
        wav = wav.expand(num_samples, -1, -1).to(next(self.stages.parameters()).device, torch.float32)
        mono = convert_audio(wav, sample_rate, self.semantic_tokenizer.sample_rate, 1)[:, 0]
        ids = self.semantic_tokenizer.encode(mono, self.semantic_tokenizer.sample_rate)
        codes, _ = self.codec.encode(convert_audio(wav, sample_rate, self.codec.sample_rate, self.codec.channels))
        levels = self.fine.plan.prefix.num_levels + self.fine.plan.target.num_levels
        return ids, codes[:, :levels]  # residual levels: the first ones are those of a codec of fewer levels

    @torch.no_grad()
    def generate(self, duration: float, num_samples: int = 1, temperature: float = 1.0,
                 top_k: tp.Optional[int] = None, seed: tp.Optional[int] = None,
                 prompt_wave: tp.Optional[torch.Tensor] = None, prompt_sample_rate: tp.Optional[int] = None,
                 cond: tp.Optional[torch.Tensor] = None, cfg: tp.Optional[float] = None) -> torch.Tensor:
        """Audio ``[num_samples, C, round(duration * frame_rate) * hop]``.

        Args:
            duration: seconds of the returned audio, the prompt included.
            num_samples: samples drawn (rows of `cond`, of `prompt_wave` when it has a batch dimension).
            temperature, top_k, seed: sampling (the seed makes the result reproducible).
            prompt_wave: ``[C, T]`` or ``[num_samples, C, T]`` audio to continue, at `prompt_sample_rate`
                (default: the codec's), shorter than `duration`.
            cond: conditioning tokens ``[num_samples, L]`` of conditioned stages (None: their null prefix).
            cfg: classifier-free guidance scale of conditioned stages (None or 1: no guidance).
        """
        device = next(self.stages.parameters()).device
        generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
        if cond is not None:
            if cond.dim() != 2 or cond.shape[0] != num_samples:
                raise ValueError(f"cond must be [num_samples={num_samples}, L], got {tuple(cond.shape)}.")
            cond = cond.to(device)
        semantic_frames = max(1, round(duration * self.semantic_rate))
        frames = max(1, round(duration * self.codec.frame_rate))
        bos = torch.full((num_samples, 1), self.semantic.plan.target.bos_id, dtype=torch.long, device=device)
        prompt_ids = bos.new_zeros(num_samples, 0)
        levels = self.fine.plan.prefix.num_levels + self.fine.plan.target.num_levels
        prompt_codes = bos.new_zeros(num_samples, levels, 0)
        if prompt_wave is not None:
            rate = prompt_sample_rate or self.codec.sample_rate
            prompt_ids, prompt_codes = self._tokenize_prompt(prompt_wave, rate, num_samples)
            if prompt_ids.shape[1] >= semantic_frames or prompt_codes.shape[-1] >= frames:
                raise ValueError(f"The prompt ({prompt_codes.shape[-1] / self.codec.frame_rate:.2f} s) must be "
                                 f"shorter than duration={duration} s.")
        semantic = torch.cat([prompt_ids, self._sample(
            self.semantic, torch.cat([bos, prompt_ids], dim=1), semantic_frames - prompt_ids.shape[1], temperature,
            top_k, generator, cond, cfg)], dim=1)

        coarse_plan = self.coarse.plan
        num_coarse = coarse_plan.target.num_levels
        known = prompt_codes[:, :num_coarse]
        known_flat = coarse_plan.target.flatten(known) + self.coarse.target_offset
        prompt = torch.cat([torch.full_like(bos, coarse_plan.bos_id), semantic, known_flat], dim=1)
        coarse_flat = self._sample(self.coarse, prompt, (frames - known.shape[-1]) * num_coarse, temperature, top_k,
                                   generator, cond, cfg)
        coarse = torch.cat([known, coarse_plan.target.unflatten(coarse_flat)], dim=-1)  # [B, Kc, frames]

        fine_plan = self.fine.plan
        window = frames if self.fine.crop_seconds is None else max(1, round(self.fine.crop_seconds
                                                                            * self.codec.frame_rate))
        pieces = []
        for start in range(0, frames, window):
            part = coarse[..., start:start + window]
            prompt = torch.cat([torch.full_like(bos, fine_plan.bos_id), fine_plan.prefix.flatten(part)], dim=1)
            flat = self._sample(self.fine, prompt, part.shape[-1] * fine_plan.target.num_levels, temperature,
                                top_k, generator, cond, cfg)
            pieces.append(fine_plan.target.unflatten(flat))
        fine = torch.cat(pieces, dim=-1)
        fine[..., :prompt_codes.shape[-1]] = prompt_codes[:, num_coarse:]  # the prompt's own fine levels
        codes = torch.cat([coarse, fine], dim=1)  # [B, K, frames]
        return self.codec.decode(codes, None)


class MusicLM(AudioLM):
    """AudioLM whose stages are conditioned on MuLaN tokens: :meth:`generate` takes texts.

    Args:
        conditioner: the frozen MuLaN and its quantizer the conditioning shards were made with
            (:func:`~audiogen_lab.models.mulan_conditioner.load_mulan_conditioner`).
        Other arguments as in :class:`AudioLM`.
    """

    def __init__(self, semantic: Stage, coarse: Stage, fine: Stage, codec: nn.Module, semantic_rate: float,
                 conditioner: nn.Module, semantic_tokenizer: tp.Optional[nn.Module] = None) -> None:
        super().__init__(semantic, coarse, fine, codec, semantic_rate, semantic_tokenizer)
        unconditioned = [name for name, stage in (("semantic", semantic), ("coarse", coarse), ("fine", fine))
                         if not stage.conditioned]
        if unconditioned:
            raise ValueError(f"MusicLM needs stages trained with audiolm.conditioning=mulan; the {unconditioned} "
                             "stage(s) were not.")
        for stage in (semantic, coarse, fine):
            model = stage.model
            if model.codebook_size != conditioner.codebook_size or model.num_levels > conditioner.num_levels:
                raise ValueError(f"The {model.namespace} stage reads {model.num_levels} levels of "
                                 f"{model.codebook_size} MuLaN codes; the conditioner gives {conditioner.num_levels}"
                                 f" of {conditioner.codebook_size}: use the MuLaN its shards were made with.")
        self.conditioner = conditioner
        self.last_scores: tp.Optional[torch.Tensor] = None

    @classmethod
    def from_checkpoints(cls, semantic: str, coarse: str, fine: str, codec: tp.Optional[str] = None,  # type: ignore[override]
                         semantic_rate: tp.Optional[float] = None, device: tp.Union[str, torch.device] = "cpu",
                         mulan: tp.Optional[str] = None) -> "MusicLM":
        """As :meth:`AudioLM.from_checkpoints`, plus the MuLaN conditioner (default: the semantic stage's
        ``mulan_checkpoint``)."""
        from ..solvers.loading import read_package
        from .mulan_conditioner import load_mulan_conditioner
        mulan = mulan or read_package(semantic).cfg.get("mulan_checkpoint")
        if not mulan:
            raise ValueError("Name the MuLaN: the semantic stage's config has no mulan_checkpoint.")
        parts = cls._load_parts(semantic, coarse, fine, codec, semantic_rate, device)
        return cls(conditioner=load_mulan_conditioner(str(mulan), device=device), **parts).eval()

    @torch.no_grad()
    def generate(self, duration: float, num_samples: int = 1, temperature: float = 1.0,  # type: ignore[override]
                 top_k: tp.Optional[int] = None, seed: tp.Optional[int] = None,
                 prompt_wave: tp.Optional[torch.Tensor] = None, prompt_sample_rate: tp.Optional[int] = None,
                 text: tp.Union[str, tp.Sequence[str], None] = None, cfg: tp.Optional[float] = 3.0,
                 num_candidates: int = 1) -> torch.Tensor:
        """Audio ``[len(text) * num_samples, C, T]`` (the samples of each text together); without `text`,
        unconditional samples.

        Each sample is the best of `num_candidates` draws by the cosine similarity of its MuLaN audio
        embedding (audio resampled to MuLaN's rate) with the text's; the scores of all candidates,
        ``[len(text), num_samples, num_candidates]``, are left in :attr:`last_scores`.
        """
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        if text is None:
            self.last_scores = None
            return super().generate(duration, num_samples, temperature, top_k, seed, prompt_wave,
                                    prompt_sample_rate)
        texts = [text] if isinstance(text, str) else list(text)
        draws = num_samples * num_candidates
        cond = self.conditioner.tokens_from_text(texts).repeat_interleave(draws, dim=0)  # [N * draws, L]
        audio = super().generate(duration, len(texts) * draws, temperature, top_k, seed, prompt_wave,
                                 prompt_sample_rate, cond=cond, cfg=cfg)
        mulan = self.conditioner.mulan
        text_emb = mulan.get_text_embeddings(texts)  # [N, D]
        audio_emb = mulan.get_audio_embeddings(audio, self.codec.sample_rate)  # [N * draws, D]
        scores = F.cosine_similarity(audio_emb.view(len(texts), num_samples, num_candidates, -1),
                                     text_emb[:, None, None], dim=-1)
        self.last_scores = scores.cpu()
        best = scores.argmax(dim=-1)  # [N, num_samples]
        rows = (torch.arange(len(texts) * num_samples, device=best.device) * num_candidates + best.flatten())
        return audio[rows.to(audio.device)]
