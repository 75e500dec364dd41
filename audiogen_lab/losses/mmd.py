"""Independence-promoting MMD loss between the levels of a residual vector quantizer.

Lemercier et al., "An Independence-promoting Loss for Music Generation with Language Models",
ICML 2024: a language model that predicts the K codebooks of a frame independently (parallel or
delayed patterns) models the product of their marginals, which is exact only if the levels are
independent. This loss measures, with a kernel maximum mean discrepancy (MMD), how far the joint
distribution of the K quantized vectors of a frame is from the product of their marginals, and is
added to the codec's training objective to push the levels towards independence.

Samples. With `q_k[i]` the level-k quantized vector of frame `i` (frames pooled over batch and time,
subsampled to `M <= max_samples` without replacement):
    joint sample               x_i = concat_k q_k[i]
    product-of-marginals       y_i = concat_k q_k[perm_k(i)],  one independent permutation per level.

Kernel and bandwidths. `k(a, b) = sum_s exp(-||a - b||^2 / (s * h))`, with `s` over `bandwidths`
(multipliers) and `h` the median squared distance among all pooled samples, computed without
gradient (median heuristic). The loss is therefore invariant to a common rescaling and translation
of the vectors. With `normalize_levels`, each level is first divided by its spread (root mean
squared distance to the level's mean, also without gradient), so that the deeper RVQ levels, whose
vectors are much smaller than the first level's, weigh as much as the first in the distances; the
loss is then also invariant to a separate rescaling of each level.

Estimator. Unbiased MMD^2 (a U-statistic):
    MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{(i, j) in P} k(x_i, y_j)
where P holds the pairs for which `y_j` reuses none of the vectors of `x_i` (`perm_k(j) != i` for
every k). The excluded pairs share a vector and are dependent by construction; excluding them keeps
every term an average over independent pairs, so the estimate has zero mean when the levels are
independent (it can then be slightly negative) and is positive in expectation otherwise.

Cost: O(M^2 * K * D) time (one matmul for all pairwise distances) and O(M^2) memory.
"""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange
from torch import nn

DEFAULT_BANDWIDTHS: tp.Tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def _random_permutations(num: int, size: int, generator: tp.Optional[torch.Generator],
                         device: torch.device) -> torch.Tensor:
    """`num` independent random permutations of `range(size)`, as a `[num, size]` long tensor."""
    rng_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(num, size, generator=generator, device=rng_device)
    return noise.argsort(dim=-1).to(device)


def _off_diagonal_mean(kernel: torch.Tensor) -> torch.Tensor:
    m = kernel.shape[0]
    return (kernel.sum() - kernel.diagonal().sum()) / (m * (m - 1))


def mmd_independence(layer_outputs: torch.Tensor, bandwidths: tp.Sequence[float] = DEFAULT_BANDWIDTHS,
                     max_samples: int = 1024, generator: tp.Optional[torch.Generator] = None,
                     normalize_levels: bool = True) -> torch.Tensor:
    """Unbiased MMD^2 between the joint distribution of the K levels and the product of their marginals.

    Args:
        layer_outputs: quantized vectors of each level, `[B, K, D, T]` (K levels of dimension D).
            Pass only the levels that are active for every item (no quantizer dropout).
        bandwidths: multipliers of the median squared pairwise distance, one Gaussian kernel each.
        max_samples: number of frames used (subsampled from the B*T frames without replacement).
        generator: random generator for the subsampling and the permutations (on any device);
            the global CPU generator when None.
        normalize_levels: divide each level by its spread (RMS distance to its mean) before measuring distances.
    Returns:
        A scalar fp32 tensor, differentiable w.r.t. `layer_outputs`. Zero when K < 2.
    """
    assert layer_outputs.dim() == 4, (
        f"Expected the quantized vectors of each level as [B, K, D, T], got shape {tuple(layer_outputs.shape)}.")
    assert len(bandwidths) > 0 and all(s > 0 for s in bandwidths), (
        f"bandwidths must be positive multipliers of the median distance, got {tuple(bandwidths)}.")
    num_levels = layer_outputs.shape[1]
    if num_levels < 2:
        return (layer_outputs.float() * 0.0).sum()
    with torch.autocast(device_type=layer_outputs.device.type, enabled=False):
        frames = rearrange(layer_outputs.float(), "b k d t -> (b t) k d")
        num_frames = frames.shape[0]
        num_samples = min(num_frames, max_samples)
        assert num_samples > num_levels, (
            f"MMD needs more frames than levels: got {num_samples} frames (B*T={num_frames}, "
            f"max_samples={max_samples}) for K={num_levels}; use more frames or a larger max_samples.")
        device = frames.device
        if num_samples < num_frames:
            keep = _random_permutations(1, num_frames, generator, device)[0, :num_samples]
            frames = frames[keep]
        x = frames  # [M, K, D]
        if normalize_levels:
            center = x.detach().mean(dim=0)  # [K, D]
            spread = (x.detach() - center).pow(2).sum(dim=-1).mean(dim=0).sqrt()  # [K]
            x = (x - center) / spread.clamp(min=torch.finfo(torch.float32).eps)[:, None]
        perms = _random_permutations(num_levels, num_samples, generator, device)  # [K, M]
        levels = torch.arange(num_levels, device=device)
        y = x[perms.t(), levels]  # y[i, k] = x[perm_k(i), k]

        z = torch.cat([rearrange(x, "m k d -> m (k d)"), rearrange(y, "m k d -> m (k d)")])
        z = z - z.detach().mean(dim=0)
        sq_norms = z.pow(2).sum(dim=-1)
        dist = (sq_norms[:, None] + sq_norms[None, :] - 2 * z @ z.t()).clamp(min=0)
        with torch.no_grad():
            upper = torch.ones(len(z), len(z), dtype=torch.bool, device=device).triu(diagonal=1)
            pairwise = dist[upper]
            median, mean = pairwise.median(), pairwise.mean()
            # Fallbacks when most samples coincide; if all do, any scale gives MMD = 0.
            scale = torch.where(median > 0, median, torch.where(mean > 0, mean, torch.ones_like(mean)))
        # Exponents are capped at 30 (kernel values below 1e-13, negligible in the averages): tinier
        # values make the forward and backward passes compute on denormals, which is very slow on CPU.
        kernel = sum(torch.exp(-(dist / (s * scale)).clamp(max=30.0)) for s in bandwidths)

        m = num_samples
        k_xx, k_yy, k_xy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
        independent = torch.ones(m, m, dtype=torch.bool, device=device)
        independent[perms, torch.arange(m, device=device).expand_as(perms)] = False  # x_{perm_k(j)} vs y_j
        cross = (k_xy * independent).sum() / independent.sum()
        return _off_diagonal_mean(k_xx) + _off_diagonal_mean(k_yy) - 2 * cross


class MMDIndependenceLoss(nn.Module):
    """Module form of :func:`mmd_independence`; see the module docstring for the estimator.

    `forward(layer_outputs [B, K, D, T], generator=None)` returns the scalar MMD^2 loss.
    """

    def __init__(self, bandwidths: tp.Sequence[float] = DEFAULT_BANDWIDTHS, max_samples: int = 1024,
                 normalize_levels: bool = True) -> None:
        super().__init__()
        assert max_samples >= 2, f"max_samples must be at least 2, got {max_samples}."
        self.bandwidths = tuple(float(s) for s in bandwidths)
        self.max_samples = max_samples
        self.normalize_levels = normalize_levels

    def forward(self, layer_outputs: torch.Tensor, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
        return mmd_independence(layer_outputs, bandwidths=self.bandwidths, max_samples=self.max_samples,
                                generator=generator, normalize_levels=self.normalize_levels)
