import math

import pytest
import torch

import vector_quantize_pytorch.vector_quantize_pytorch as vqp_module
from einops import rearrange
from audiogen_lab.quantization.base import DummyQuantizer, QuantizedResult
from audiogen_lab.quantization.levels import first_levels
from audiogen_lab.quantization.rvq import ResidualVectorQuantizer

DIM, N_Q, BINS, FRAME_RATE = 8, 4, 32, 50


def _quantizer(**kwargs) -> ResidualVectorQuantizer:
    options = dict(dimension=DIM, n_q=N_Q, bins=BINS, kmeans_iters=5)
    options.update(kwargs)
    return ResidualVectorQuantizer(**options)


def _latents(seed: int = 0, batch: int = 4, frames: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, DIM, frames, generator=gen)


def _initialised(**kwargs) -> ResidualVectorQuantizer:
    """A quantizer whose codebooks were k-means initialised on one training batch, in eval mode."""
    torch.manual_seed(0)
    quantizer = _quantizer(**kwargs)
    quantizer.train()
    quantizer(_latents(), FRAME_RATE)
    return quantizer.eval()


def test_forward_codes_bandwidth_and_shapes():
    quantizer = _initialised()
    x = _latents(1)
    result = quantizer(x, FRAME_RATE)
    assert isinstance(result, QuantizedResult)
    assert result.x.shape == x.shape and result.x.dtype == torch.float32
    assert result.codes.shape == (4, N_Q, 128) and result.codes.dtype == torch.long
    assert result.codes.min() >= 0 and result.codes.max() < BINS
    assert result.bandwidth.item() == pytest.approx(N_Q * math.log2(BINS) * FRAME_RATE / 1000)
    assert result.layer_outputs.shape == (4, N_Q, DIM, 128)
    assert result.metrics['num_codebooks'] == N_Q
    assert quantizer.cardinality == BINS and quantizer.total_codebooks == N_Q == quantizer.num_codebooks


def test_decode_of_encode_equals_forward_in_eval():
    quantizer = _initialised()
    x = _latents(2)
    result = quantizer(x, FRAME_RATE)
    codes = quantizer.encode(x)
    assert torch.equal(codes, result.codes)
    torch.testing.assert_close(quantizer.decode(codes), result.x, rtol=0, atol=1e-6)


def test_training_penalty_and_straight_through_gradients():
    torch.manual_seed(0)
    quantizer = _quantizer().train()
    x = _latents(3).requires_grad_()
    result = quantizer(x, FRAME_RATE)
    assert result.penalty is not None and result.penalty.item() > 0
    # commitment loss: sum over levels of mse(q_k, r_k) with r_k the residual entering level k
    residual, expected = x.detach(), 0.
    for k in range(N_Q):
        level = result.layer_outputs[:, k].detach()
        expected += ((level - residual) ** 2).mean()
        residual = residual - level
    assert result.penalty.item() == pytest.approx(expected.item(), rel=1e-4)
    (grad_penalty,) = torch.autograd.grad(result.penalty, x, retain_graph=True)
    assert grad_penalty.abs().sum() > 0
    (grad_out,) = torch.autograd.grad(result.x.sum(), x)
    torch.testing.assert_close(grad_out, torch.ones_like(x))  # identity gradient through quantization


def test_layer_outputs_sum_to_output_and_pass_gradients():
    for training in (True, False):
        torch.manual_seed(0)
        quantizer = _quantizer().train(training)
        if not training:
            quantizer.train()(_latents(), FRAME_RATE)
            quantizer.eval()
        x = _latents(4).requires_grad_()
        result = quantizer(x, FRAME_RATE)
        torch.testing.assert_close(result.layer_outputs.sum(dim=1), result.x, rtol=0, atol=1e-5)
        for k in range(N_Q):
            (grad,) = torch.autograd.grad(result.layer_outputs[:, k].sum(), x, retain_graph=True)
            torch.testing.assert_close(grad, torch.ones_like(x))
        if not training:  # each level is the codeword its code points to
            codes = result.codes
            for k in range(N_Q):
                level = quantizer.decode(codes[:, :k + 1]) - (quantizer.decode(codes[:, :k]) if k else 0.)
                torch.testing.assert_close(result.layer_outputs[:, k].detach(), level, rtol=0, atol=1e-5)


def test_more_codebooks_lower_error_after_kmeans_init():
    quantizer = _initialised()
    x = _latents(5)
    errors = []
    for n in range(1, N_Q + 1):
        quantizer.set_num_codebooks(n)
        errors.append(((quantizer(x, FRAME_RATE).x - x) ** 2).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.7 * x.pow(2).mean().item()


def test_set_num_codebooks_changes_bandwidth_and_code_rows():
    quantizer = _initialised()
    x = _latents(6)
    full = quantizer.encode(x)
    quantizer.set_num_codebooks(2)
    result = quantizer(x, FRAME_RATE)
    assert result.codes.shape[1] == 2 and quantizer.encode(x).shape[1] == 2
    assert torch.equal(result.codes, full[:, :2])  # residual levels are greedy: a prefix of the full codes
    assert result.bandwidth.item() == pytest.approx(2 * math.log2(BINS) * FRAME_RATE / 1000)
    torch.testing.assert_close(quantizer.decode(result.codes), result.x, rtol=0, atol=1e-6)
    assert len(quantizer.vq.layers) == N_Q  # the full quantizer is restored after the call
    for bad in (0, N_Q + 1):
        with pytest.raises(ValueError, match='num_codebooks'):
            quantizer.set_num_codebooks(bad)


def test_quantizer_dropout_uses_random_prefix_in_training_only():
    torch.manual_seed(0)
    quantizer = _quantizer(q_dropout=True).train()
    used = set()
    for seed in range(12):
        result = quantizer(_latents(seed), FRAME_RATE)
        n = int(result.metrics['num_codebooks'])
        used.add(n)
        assert result.codes.shape[1] == n == result.layer_outputs.shape[1]
        assert result.codes.min() >= 0
        assert result.bandwidth.item() == pytest.approx(n * math.log2(BINS) * FRAME_RATE / 1000)
        torch.testing.assert_close(result.layer_outputs.sum(dim=1), result.x, rtol=0, atol=1e-5)
    assert len(used) > 1 and used <= set(range(1, N_Q + 1))
    quantizer.eval()
    assert quantizer(_latents(0), FRAME_RATE).codes.shape[1] == N_Q
    quantizer.train()
    assert quantizer.encode(_latents(0)).shape[1] == N_Q and quantizer.training


def test_kmeans_runs_on_first_batch_only(monkeypatch):
    calls = []
    original = vqp_module.kmeans

    def counting_kmeans(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(vqp_module, 'kmeans', counting_kmeans)
    torch.manual_seed(0)
    quantizer = _quantizer().train()
    for seed in range(3):
        quantizer(_latents(seed), FRAME_RATE)
    assert len(calls) == N_Q
    restored = _quantizer()
    restored.load_state_dict(quantizer.state_dict())
    restored.train()(_latents(0), FRAME_RATE)
    assert len(calls) == N_Q  # loaded codebooks are not re-initialised
    restored.eval()
    quantizer.eval()
    assert torch.equal(restored.encode(_latents(9)), quantizer.encode(_latents(9)))


def test_ema_codebooks_learn_without_kmeans():
    torch.manual_seed(0)
    quantizer = _quantizer(kmeans_init=False, decay=0.8, threshold_ema_dead_code=0).train()
    x = _latents(7)
    errors = []
    for _ in range(15):
        errors.append(((quantizer(x, FRAME_RATE).x - x) ** 2).mean().item())
    assert errors[-1] < 0.8 * errors[0], errors


def test_quantization_is_float32_under_autocast():
    quantizer = _initialised()
    x = _latents(8)
    expected = quantizer(x, FRAME_RATE)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        result = quantizer(x.bfloat16(), FRAME_RATE)
    assert result.x.dtype == torch.float32
    assert (result.codes == expected.codes).float().mean() > 0.9


def test_dummy_quantizer_is_identity():
    quantizer = DummyQuantizer()
    x = _latents(9)
    result = quantizer(x, FRAME_RATE)
    assert result.x is x and result.codes.shape == (4, 0, 128)
    assert result.bandwidth.item() == pytest.approx(DIM * 32 * FRAME_RATE / 1000)
    assert quantizer.encode(x) is x and quantizer.decode(x) is x
    assert quantizer.is_continuous and not _quantizer().is_continuous
    with pytest.raises(ValueError, match='continuous'):
        quantizer.set_num_codebooks(1)


def _library_codes(quantizer: ResidualVectorQuantizer, x: torch.Tensor) -> torch.Tensor:
    """Codes [B, K, T] from the library's own residual loop in eval mode (the reference for `encode`)."""
    was_training = quantizer.training
    quantizer.eval()
    with torch.no_grad(), first_levels(quantizer.vq, quantizer.num_codebooks):
        _, codes, _ = quantizer.vq(rearrange(x, 'b d t -> b t d'))
    quantizer.train(was_training)
    return rearrange(codes, 'b t k -> b k t')


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('dim,bins,init_frames', [(DIM, BINS, 160), (128, 1024, 75)])
def test_encode_search_gives_the_library_codes(dim, bins, init_frames, threads):
    # 8 x 75 vectors for 1024 codes: k-means samples duplicated codewords, i.e. exact distance ties
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # matmul kernels (and their rounding) depend on the thread count
    try:
        torch.manual_seed(0)
        quantizer = ResidualVectorQuantizer(dimension=dim, n_q=N_Q, bins=bins, kmeans_iters=5).train()
        gen = torch.Generator().manual_seed(1)
        quantizer(torch.randn(8, dim, init_frames, generator=gen), FRAME_RATE)  # k-means initialisation
        quantizer(torch.randn(8, dim, init_frames, generator=gen), FRAME_RATE)  # one EMA update
        quantizer.eval()
        for batch, frames, n in [(1, 750, N_Q), (3, 101, N_Q), (2, 64, 2), (5, 1, 1)]:
            quantizer.set_num_codebooks(n)
            x = 1.3 * torch.randn(batch, dim, frames, generator=gen)
            codes = quantizer.encode(x)
            assert codes.shape == (batch, n, frames) and codes.dtype == torch.long
            assert torch.equal(codes, _library_codes(quantizer, x)), (batch, frames, n)
    finally:
        torch.set_num_threads(old_threads)


@pytest.mark.parametrize('threads', [1, 2])
def test_encode_search_gives_the_library_codes_on_its_kmeans_data(threads):
    # Codebooks k-means initialised on fewer vectors than codes hold duplicated data points: encoding
    # those same vectors meets exact ties, which a different rounding of the distances would flip.
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        quantizer = ResidualVectorQuantizer(dimension=128, n_q=N_Q, bins=1024, kmeans_iters=10).train()
        x = 0.1 * torch.randn(1, 128, 750, generator=torch.Generator().manual_seed(3)).cumsum(-1)
        quantizer(x.repeat(2, 1, 1), FRAME_RATE)
        quantizer.eval()
        assert torch.equal(quantizer.encode(x), _library_codes(quantizer, x))
    finally:
        torch.set_num_threads(old_threads)


def test_encode_search_breaks_ties_like_the_library():
    quantizer = _initialised()
    codebook = quantizer.vq.layers[0]._codebook.embed
    codebook[0, 17] = codebook[0, 5]  # two identical codewords: the first index wins in both paths
    x = rearrange(codebook[0, 5], 'd -> 1 d 1').repeat(2, 1, 3).clone()
    codes = quantizer.encode(x)
    assert torch.equal(codes, _library_codes(quantizer, x))
    assert (codes[:, 0] == 5).all()


def test_encode_before_initialisation_initialises_like_the_library(monkeypatch):
    calls = []
    original = vqp_module.kmeans
    monkeypatch.setattr(vqp_module, 'kmeans', lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    quantizer = _quantizer().eval()
    x = _latents(10, batch=8)
    codes = quantizer.encode(x)
    assert len(calls) == N_Q  # the library initialised every codebook on `x`
    assert all(bool(layer._codebook.initted) for layer in quantizer.vq.layers)
    assert torch.equal(quantizer.encode(x), codes)  # later calls take the search path, same codes
    assert len(calls) == N_Q
