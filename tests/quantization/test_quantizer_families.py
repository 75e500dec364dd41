"""Grouped residual VQ, residual FSQ and residual LFQ behind the BaseQuantizer contract."""
import copy
import math

import pytest
import torch
from einops import rearrange
from omegaconf import OmegaConf

from audiogen_lab.models.builders import QUANTIZERS, get_compression_model, get_quantizer
from audiogen_lab.quantization.grvq import GroupedResidualVectorQuantizer
from audiogen_lab.quantization.rfsq import ResidualFiniteScalarQuantizer
from audiogen_lab.quantization.rlfq import ResidualLookupFreeQuantizer

DIM, FRAME_RATE, N_Q, GROUPS = 8, 50, 3, 2
FSQ_LEVELS = [5, 4, 3]
FAMILIES = ['grvq', 'rfsq', 'rlfq']


def _quantizer(name: str, **kwargs):
    """Small quantizers: grvq 2 groups x 3 levels of 16 codes, rfsq 3 levels of 60 codes (3 code channels),
    rlfq 3 levels of 16 codes (4 code channels)."""
    if name == 'grvq':
        options = dict(dimension=DIM, n_q=N_Q, groups=GROUPS, bins=16, kmeans_iters=5)
        return GroupedResidualVectorQuantizer(**{**options, **kwargs})
    if name == 'rfsq':
        return ResidualFiniteScalarQuantizer(**{**dict(dimension=DIM, levels=FSQ_LEVELS, n_q=N_Q), **kwargs})
    return ResidualLookupFreeQuantizer(**{**dict(dimension=DIM, n_q=N_Q, bins=16), **kwargs})


CARDINALITY = {'grvq': 16, 'rfsq': math.prod(FSQ_LEVELS), 'rlfq': 16}
TOTAL = {'grvq': GROUPS * N_Q, 'rfsq': N_Q, 'rlfq': N_Q}
STEP = {'grvq': GROUPS, 'rfsq': 1, 'rlfq': 1}  # codebooks per level


def _latents(seed: int = 0, batch: int = 4, frames: int = 64, dim: int = DIM) -> torch.Tensor:
    return torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))


def _ready(name: str, **kwargs):
    """A quantizer after one training batch (k-means initialisation for grvq), in eval mode."""
    torch.manual_seed(0)
    quantizer = _quantizer(name, **kwargs).train()
    quantizer(_latents(100, dim=quantizer.dimension), FRAME_RATE)
    return quantizer.eval()


def _bandwidth(name: str, n_codebooks: int) -> float:
    return n_codebooks * math.log2(CARDINALITY[name]) * FRAME_RATE / 1000


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('training', [True, False])
def test_forward_contract(name, training):
    quantizer = _ready(name).train(training)
    x = _latents(1)
    result = quantizer(x, FRAME_RATE)
    K = TOTAL[name]
    assert result.x.shape == x.shape and result.x.dtype == torch.float32
    assert result.codes.shape == (4, K, 64) and result.codes.dtype == torch.long
    assert result.codes.min() >= 0 and result.codes.max() < CARDINALITY[name]
    assert len(result.codes.unique()) > 4  # several codes in use, not a constant
    assert result.bandwidth.item() == pytest.approx(_bandwidth(name, K))
    assert result.metrics == {'num_codebooks': float(K)}
    assert result.layer_outputs.shape == (4, K, DIM, 64)
    torch.testing.assert_close(result.layer_outputs.sum(dim=1), result.x, rtol=0, atol=1e-5)
    assert result.penalty is not None and result.penalty.dim() == 0
    assert quantizer.total_codebooks == quantizer.num_codebooks == K
    assert quantizer.cardinality == CARDINALITY[name]
    assert quantizer.bandwidth_per_codebook(FRAME_RATE) == pytest.approx(_bandwidth(name, 1))
    if name == 'grvq':  # codebooks fitted by k-means; FSQ / LFQ projections are untrained here
        assert ((result.x - x) ** 2).mean() < 0.5 * x.pow(2).mean()


@pytest.mark.parametrize('name', FAMILIES)
def test_decode_of_encode_equals_forward_in_eval(name):
    quantizer = _ready(name)
    x = _latents(2)
    result = quantizer(x, FRAME_RATE)
    codes = quantizer.encode(x)
    assert torch.equal(codes, result.codes)
    torch.testing.assert_close(quantizer.decode(codes), result.x, rtol=0, atol=1e-6)


@pytest.mark.parametrize('name', FAMILIES)
def test_output_equals_the_library_output_in_eval(name):
    quantizer = _ready(name)
    library = quantizer.vq if name == 'grvq' else quantizer.residual
    x = _latents(17)
    with torch.no_grad():
        expected = rearrange(library(rearrange(x, 'b d t -> b t d'))[0], 'b t d -> b d t')
        decoded = quantizer.decode(quantizer.encode(x))
    torch.testing.assert_close(quantizer(x, FRAME_RATE).x, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('name', FAMILIES)
def test_encode_in_training_mode_changes_no_state(name):
    quantizer = _ready(name, q_dropout=True).train()
    before = copy.deepcopy(quantizer.state_dict())
    codes = quantizer.encode(_latents(3))
    assert codes.shape[1] == TOTAL[name] and quantizer.training  # no levels dropped, mode restored
    after = quantizer.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    assert torch.equal(codes, quantizer.eval().encode(_latents(3)))


@pytest.mark.parametrize('name', FAMILIES)
def test_layer_outputs_are_the_levels(name):
    quantizer = _ready(name)
    x = _latents(4)
    result = quantizer(x, FRAME_RATE)
    codes, step = result.codes, STEP[name]
    previous = torch.zeros_like(x)
    for k in range(step, TOTAL[name] + 1, step):  # one level (of every group) at a time
        prefix = quantizer.decode(codes[:, :k])
        level = result.layer_outputs[:, k - step:k].sum(dim=1).detach()
        torch.testing.assert_close(level, prefix - previous, rtol=0, atol=1e-5)
        previous = prefix
    if name == 'grvq':  # level-major rows: row k holds group k % groups, zeros on the other group's channels
        per_group = rearrange(result.layer_outputs.detach(), 'b (l g) (h c) t -> b l g h c t', g=GROUPS, h=GROUPS)
        for g in range(GROUPS):
            assert per_group[:, :, g, g].abs().sum() > 0
            assert per_group[:, :, g, 1 - g].abs().sum() == 0


def test_grouped_codes_are_level_major_and_groups_are_independent():
    quantizer = _ready('grvq')
    x = _latents(5)
    codes = quantizer.encode(x)
    group_size = DIM // GROUPS
    for g in range(GROUPS):  # row l * groups + g holds the library's code of level l in group g
        rvq = quantizer.vq.rvqs[g]
        rvq.eval()
        with torch.no_grad():
            _, indices, _ = rvq(rearrange(x[:, g * group_size:(g + 1) * group_size], 'b d t -> b t d'))
        assert torch.equal(codes[:, g::GROUPS], rearrange(indices, 'b t l -> b l t'))
    x_other = x.clone()
    x_other[:, group_size:] = _latents(6)[:, group_size:]  # change the second group's channels only
    assert torch.equal(quantizer.encode(x_other)[:, 0::GROUPS], codes[:, 0::GROUPS])


def test_grouped_encode_initialises_fresh_codebooks():
    torch.manual_seed(0)
    quantizer = _quantizer('grvq').eval()
    x = _latents(7)
    codes = quantizer.encode(x)
    assert all(bool(layer._codebook.initted) for rvq in quantizer.vq.rvqs for layer in rvq.layers)
    assert len(codes.unique()) > 4
    torch.testing.assert_close(quantizer.decode(codes), quantizer(x, FRAME_RATE).x, rtol=0, atol=1e-6)


# -- gradients and penalties ----------------------------------------------------------------------------

def _fsq_bound_derivative(z: torch.Tensor) -> torch.Tensor:
    """d/dz of the library's soft clamp tanh(z / c) * c before residual FSQ, c = 1 + 1 / (L - 1)."""
    c = rearrange(1 + 1 / (torch.tensor(FSQ_LEVELS, dtype=torch.float32) - 1), 'c -> 1 c 1')
    return 1 - torch.tanh(z / c) ** 2


@pytest.mark.parametrize('training', [True, False])
def test_straight_through_gradient_without_projection(training):
    weights = _latents(8)
    cases = [('grvq', {}, DIM), ('rlfq', dict(dimension=4), 4), ('rfsq', dict(dimension=len(FSQ_LEVELS)), 3)]
    for name, kwargs, dim in cases:
        quantizer = _ready(name, **kwargs).train(training)
        x = _latents(9, dim=dim).requires_grad_()
        result = quantizer(x, FRAME_RATE)
        upstream = weights[:, :dim]
        (grad,) = torch.autograd.grad((result.x * upstream).sum(), x)
        expected = upstream * _fsq_bound_derivative(x.detach()) if name == 'rfsq' else upstream
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize('name', ['rfsq', 'rlfq'])
def test_straight_through_gradient_through_projections(name):
    quantizer = _ready(name).train()
    x = _latents(10).requires_grad_()
    upstream = _latents(11)
    (grad,) = torch.autograd.grad((quantizer(x, FRAME_RATE).x * upstream).sum(), x)
    residual = quantizer.residual  # the unquantized path: project in, (bound,) project out
    z = residual.project_in(rearrange(x, 'b d t -> b t d'))
    if name == 'rfsq':
        clamp = residual.soft_clamp_input_value
        z = torch.tanh(z / clamp) * clamp
    (expected,) = torch.autograd.grad((rearrange(residual.project_out(z), 'b t d -> b d t') * upstream).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize('name', FAMILIES)
def test_layer_outputs_pass_gradients(name):
    quantizer = _ready(name).train()
    x = _latents(12).requires_grad_()
    result = quantizer(x, FRAME_RATE)
    for k in range(TOTAL[name]):
        (grad,) = torch.autograd.grad(result.layer_outputs[:, k].sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0, k
        if name == 'grvq':  # identity on the channels of the row's group only
            group = k % GROUPS
            mask = torch.zeros(DIM)
            mask[group * DIM // GROUPS:(group + 1) * DIM // GROUPS] = 1
            torch.testing.assert_close(grad, mask.view(1, DIM, 1).expand_as(x))


def test_penalties():
    x = _latents(13).requires_grad_()
    grvq = _quantizer('grvq').train()
    penalty = grvq(x, FRAME_RATE).penalty
    assert penalty.item() > 0 and torch.autograd.grad(penalty, x)[0].abs().sum() > 0
    rfsq = _quantizer('rfsq').train()
    penalty = rfsq(x, FRAME_RATE).penalty
    assert penalty.item() == 0 and not penalty.requires_grad
    rlfq = _quantizer('rlfq').train()
    penalty = rlfq(x, FRAME_RATE).penalty
    assert penalty.item() != 0 and torch.autograd.grad(penalty, x)[0].abs().sum() > 0
    assert rlfq.eval()(x, FRAME_RATE).penalty.item() == 0


def test_lfq_commitment_penalty_value():
    # without projection nor entropy term: sum over levels of mse(level input, level codeword)
    quantizer = _quantizer('rlfq', dimension=4, entropy_loss_weight=0.0, commitment_weight=1.0).train()
    x = _latents(14, dim=4)
    result = quantizer(x, FRAME_RATE)
    residual, expected = x, 0.
    for k in range(N_Q):
        level = result.layer_outputs[:, k].detach()
        assert torch.equal(level.abs(), torch.full_like(level, 2. ** -k))  # sign codewords +-2^-k
        expected += ((level - residual) ** 2).mean()
        residual = residual - level
    assert result.penalty.item() == pytest.approx(expected.item(), rel=1e-5)


# -- number of codebooks, dropout, precision --------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILIES)
def test_set_num_codebooks(name):
    quantizer = _ready(name)
    x = _latents(15)
    full = quantizer.encode(x)
    n = STEP[name]
    quantizer.set_num_codebooks(n)
    result = quantizer(x, FRAME_RATE)
    assert quantizer.num_codebooks == n and result.codes.shape[1] == n and quantizer.encode(x).shape[1] == n
    assert torch.equal(result.codes, full[:, :n])  # residual levels are greedy: a prefix of the full codes
    assert result.bandwidth.item() == pytest.approx(_bandwidth(name, n))
    assert result.metrics['num_codebooks'] == n and result.layer_outputs.shape[1] == n
    torch.testing.assert_close(quantizer.decode(result.codes), result.x, rtol=0, atol=1e-6)
    coarse = ((result.x - x) ** 2).mean()
    quantizer.set_num_codebooks(TOTAL[name])
    assert ((quantizer(x, FRAME_RATE).x - x) ** 2).mean() < coarse  # more levels, lower error
    for bad in (0, -1, TOTAL[name] + STEP[name]):
        with pytest.raises(ValueError, match=rf'num_codebooks must .*\[{STEP[name]}, {TOTAL[name]}\]'):
            quantizer.set_num_codebooks(bad)
    assert quantizer.num_codebooks == TOTAL[name]


def test_grouped_num_codebooks_must_be_a_multiple_of_groups():
    quantizer = _ready('grvq')
    for bad in (1, 3, 5):
        with pytest.raises(ValueError, match=r'multiple of groups=2 in \[2, 6\]'):
            quantizer.set_num_codebooks(bad)
    with pytest.raises(AssertionError, match='multiple of groups'):
        quantizer.decode(torch.zeros(1, 3, 4, dtype=torch.long))


@pytest.mark.parametrize('name', FAMILIES)
def test_quantizer_dropout_in_training_only(name):
    quantizer = _ready(name, q_dropout=True).train()
    used = set()
    torch.manual_seed(0)
    for seed in range(12):
        result = quantizer(_latents(seed), FRAME_RATE)
        n = int(result.metrics['num_codebooks'])
        used.add(n)
        assert result.codes.shape[1] == n == result.layer_outputs.shape[1] and result.codes.min() >= 0
        assert result.bandwidth.item() == pytest.approx(_bandwidth(name, n))
        torch.testing.assert_close(result.layer_outputs.sum(dim=1), result.x, rtol=0, atol=1e-5)
    assert len(used) > 1 and used <= set(range(STEP[name], TOTAL[name] + 1, STEP[name]))
    quantizer.eval()
    assert quantizer(_latents(0), FRAME_RATE).codes.shape[1] == TOTAL[name]


@pytest.mark.parametrize('name', FAMILIES)
def test_float32_under_autocast(name):
    quantizer = _ready(name)
    x = _latents(16)
    expected = quantizer(x, FRAME_RATE)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        result = quantizer(x.bfloat16(), FRAME_RATE)
        codes = quantizer.encode(x)
        decoded = quantizer.decode(codes)
    assert result.x.dtype == decoded.dtype == torch.float32 and result.layer_outputs.dtype == torch.float32
    assert torch.equal(codes, expected.codes)  # float32 input: autocast changes nothing
    assert (result.codes == expected.codes).float().mean() > 0.8


# -- learning -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILIES)
def test_fitting_a_latent_lowers_the_quantized_error(name):
    """A learnable latent (and the quantizer's projections) fit targets through the quantizer."""
    torch.manual_seed(0)
    quantizer = _quantizer(name, **(dict(decay=0.8) if name == 'grvq' else {})).train()
    gen = torch.Generator().manual_seed(1)
    rank = {'grvq': DIM, 'rfsq': len(FSQ_LEVELS), 'rlfq': 4}[name]  # what the code space can represent
    sources = torch.rand(4, rank, 64, generator=gen) * 2 - 1
    targets = torch.einsum('dr,brt->bdt', torch.randn(DIM, rank, generator=gen), sources)
    latent = torch.nn.Parameter(torch.randn(4, DIM, 64, generator=gen))
    optimizer = torch.optim.Adam([latent, *quantizer.parameters()], lr=0.03)
    errors = []
    for _ in range(100):
        result = quantizer(latent, FRAME_RATE)
        error = ((result.x - targets) ** 2).mean()
        optimizer.zero_grad()
        (error + 0.1 * result.penalty).backward()
        optimizer.step()
        errors.append(error.item())
    with torch.no_grad():
        final = ((quantizer.eval()(latent, FRAME_RATE).x - targets) ** 2).mean().item()
    assert final < (0.2 if name == 'grvq' else 0.1) * errors[0], (errors[0], errors[-1], final)


# -- builders and the EnCodec model ------------------------------------------------------------------------

@pytest.mark.parametrize('config', ['default', 'debug'])
def test_config_sections_build(config):
    cfg = OmegaConf.load(f'config/model/encodec/{config}.yaml')
    dimension = cfg.seanet.dimension
    for name in FAMILIES:
        quantizer = get_quantizer(name, cfg, dimension=dimension)
        assert isinstance(quantizer, QUANTIZERS[name]) and quantizer.dimension == dimension
        assert quantizer.num_codebooks == quantizer.total_codebooks > 1
    grvq = get_quantizer('grvq', cfg, dimension=dimension)
    assert grvq.total_codebooks == cfg.grvq.groups * cfg.grvq.n_q and grvq.cardinality == cfg.grvq.bins
    assert get_quantizer('rfsq', cfg, dimension=dimension).cardinality == math.prod(cfg.rfsq.levels)
    assert get_quantizer('rlfq', cfg, dimension=dimension).cardinality == cfg.rlfq.bins
    with pytest.raises(TypeError, match=r"config 'rfsq'.*bins"):
        get_quantizer('rfsq', OmegaConf.merge(cfg, {'rfsq': {'bins': 64}}), dimension=dimension)


def _audio(batch: int, samples: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    freqs = torch.rand(batch, 1, 3, 1, generator=gen) * 400 + 100
    return 0.3 * torch.sin(2 * math.pi * freqs * t).sum(dim=2)


@pytest.mark.parametrize('name', FAMILIES)
def test_encodec_from_debug_config(name):
    from audiogen_lab.train import main

    cfg = main.get_xp(['solver=compression/debug', f'encodec.quantizer={name}']).cfg
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    assert isinstance(model.quantizer, QUANTIZERS[name])
    expected_total = {'grvq': cfg.grvq.groups * cfg.grvq.n_q, 'rfsq': cfg.rfsq.n_q, 'rlfq': cfg.rlfq.n_q}[name]
    expected_cardinality = {'grvq': cfg.grvq.bins, 'rfsq': math.prod(cfg.rfsq.levels), 'rlfq': cfg.rlfq.bins}[name]
    assert model.total_codebooks == model.num_codebooks == expected_total
    assert model.cardinality == expected_cardinality

    x = _audio(4, 1700, seed=0)  # not a multiple of the hop (160)
    frames = math.ceil(1700 / model.hop_length)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = copy.deepcopy(model.state_dict())
    model.train()
    result = model(x)
    assert result.x.shape == x.shape and result.codes.shape == (4, expected_total, frames)
    loss = (result.x - x).abs().mean() + result.penalty
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    grads = {key: p.grad for key, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for key, g in grads.items() if key.startswith('encoder.')), \
        "every encoder weight gets a gradient through the quantizer"
    optimizer.step()
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())

    model.eval()
    with torch.no_grad():  # as the forward pass below: kernels chosen with autograd on may round differently
        codes, scale = model.encode(x)
    assert codes.shape == (4, expected_total, frames) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < expected_cardinality
    decoded = model.decode(codes, scale)
    assert decoded.shape == (4, 1, frames * model.hop_length)
    with torch.no_grad():
        result = model(x)
    assert torch.equal(result.codes, codes)
    torch.testing.assert_close(decoded[..., :1700], result.x, rtol=1e-5, atol=1e-6)
    step = cfg.grvq.groups if name == 'grvq' else 1
    model.set_num_codebooks(step)
    assert model.encode(x)[0].shape == (4, step, frames)
    assert model(x).bandwidth.item() == pytest.approx(step * math.log2(expected_cardinality) * model.frame_rate / 1000)
