"""Data loaders from config: the dataset registry, dict batches with masks, num_samples per split,
iterable loaders and the datasource limits."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import find_audio_files, save_audio_meta
from audiogen_lab.data.builders import DATASET_KINDS, get_dataloaders, loader_length
from audiogen_lab.data.info_dataset import write_sidecar
from audiogen_lab.data.latent_dataset import LatentMeta, write_latent_files
from audiogen_lab.data.token_dataset import TokenShardMeta, write_token_shards

SR = 8000
REPO = Path(__file__).resolve().parents[2]
SPLITS = ('train', 'valid', 'evaluate', 'generate')


def make_cfg(datasource, *overrides: str):
    """The solver defaults (config/solver/default.yaml) with a datasource and dotlist overrides."""
    cfg = OmegaConf.load(REPO / 'config' / 'solver' / 'default.yaml')
    base = {'solver': 'test', 'sample_rate': SR, 'channels': 1, 'seed': 0,
            'datasource': {'max_sample_rate': SR, 'max_channels': 1, **datasource},
            'dataset': {'batch_size': 2, 'num_workers': 0}}
    return OmegaConf.merge(cfg, base, OmegaConf.from_dotlist(list(overrides)))


@pytest.fixture
def audio_root(tmp_path) -> Path:
    """Per split, four mono files of different lengths (0.5, 1.25, 0.75, 2 s), file j constant 0.1 * (j + 1)."""
    root = tmp_path / 'audio'
    for split in SPLITS:
        folder = root / split
        for j, duration in enumerate((0.5, 1.25, 0.75, 2.0)):
            audio_write(folder / f'f{j}.wav', torch.full((1, int(duration * SR)), 0.1 * (j + 1)), SR, subtype='FLOAT')
            write_sidecar(folder / f'f{j}.wav', [f'file {j}', f'clip number {j}'])
        save_audio_meta(folder / 'data.jsonl', find_audio_files(folder), relative=True)
    return root


def sources(root: Path) -> dict:
    return {split: str(root / split) for split in SPLITS}


def test_registry_lists_the_kinds():
    assert sorted(DATASET_KINDS) == ['audio', 'audio_text', 'latents', 'paired_tokens', 'tokens']


def test_unequal_length_evaluate_batches_are_padded_with_masks(audio_root):
    cfg = make_cfg(sources(audio_root), 'dataset.segment_duration=1.0', 'dataset.evaluate.segment_duration=null')
    loaders = get_dataloaders(cfg, updates_per_epoch=3)
    batches = list(loaders['evaluate'])
    assert loader_length(loaders['evaluate']) == len(batches) == 2
    lengths = [0.5, 1.25, 0.75, 2.0]
    for b, batch in enumerate(batches):
        assert set(batch) == {'audio', 'mask', 'paths'}
        expected = [int(d * SR) for d in lengths[2 * b:2 * b + 2]]
        assert batch['audio'].shape == (2, 1, max(expected)) and batch['mask'].dtype == torch.bool
        assert batch['mask'].sum(-1).tolist() == expected
        for row, (length, path) in enumerate(zip(expected, batch['paths'])):
            j = int(Path(path).stem[1:])
            assert torch.allclose(batch['audio'][row, :, :length], torch.tensor(0.1 * (j + 1)))
            assert batch['audio'][row, :, length:].abs().sum() == 0
            assert not batch['mask'][row, length:].any()
    train = next(iter(loaders['train']))
    assert train['audio'].shape == (2, 1, SR)
    assert torch.equal(train['audio'][:, 0] != 0, train['mask'])  # the files hold no zeros: only padding does
    generate = next(iter(loaders['generate']))  # return_info by default for generate
    assert [info.meta.path for info in generate['info']] == generate['paths']
    assert [info.n_frames for info in generate['info']] == generate['mask'].sum(-1).tolist()


def test_num_samples_is_honoured_for_every_split(audio_root):
    cfg = make_cfg(sources(audio_root), 'dataset.segment_duration=0.5', 'dataset.valid.num_samples=6',
                   'dataset.evaluate.num_samples=null', 'dataset.generate.num_samples=3',
                   'dataset.generate.segment_duration=null')
    loaders = get_dataloaders(cfg, updates_per_epoch=4)
    assert len(loaders['train'].dataset) == 4 * 2 and loader_length(loaders['train']) == 4
    assert len(loaders['valid'].dataset) == 6 and len(loaders['evaluate'].dataset) == 4
    assert len(loaders['generate'].dataset) == 3
    explicit = get_dataloaders(make_cfg(sources(audio_root), 'dataset.segment_duration=0.5',
                                        'dataset.train.num_samples=10'), updates_per_epoch=4)
    assert len(explicit['train'].dataset) == 10
    # valid: six fixed segments, the same in every epoch, spread over the four files.
    valid = loaders['valid'].dataset
    first = [(valid[i]['path'], valid[i]['audio']) for i in range(6)]
    valid.set_epoch(5)
    assert all(p == q and torch.equal(a, b) for (p, a), (q, b) in zip(first, [(valid[i]['path'], valid[i]['audio'])
                                                                                for i in range(6)]))
    assert len({path for path, _ in first}) == 4
    # generate: three different whole files; evaluate: every file once, in manifest order.
    generate = [p for batch in loaders['generate'] for p in batch['paths']]
    assert len(generate) == 3 and len(set(generate)) == 3
    evaluate = [p for batch in loaders['evaluate'] for p in batch['paths']]
    assert evaluate == [str(audio_root / 'evaluate' / f'f{j}.wav') for j in range(4)]


def test_audio_text_kind_yields_captions(audio_root):
    cfg = make_cfg(sources(audio_root), 'dataset.kind=audio_text', 'dataset.segment_duration=0.5')
    batch = next(iter(get_dataloaders(cfg, updates_per_epoch=2)['train']))
    assert set(batch) == {'audio', 'mask', 'paths', 'text'}
    for text, path in zip(batch['text'], batch['paths']):
        j = Path(path).stem[1:]
        assert text in (f'file {j}', f'clip number {j}')


def test_token_and_latent_kinds(tmp_path):
    gen = torch.Generator().manual_seed(0)
    token_meta = TokenShardMeta(model='//sig/x', frame_rate=50., cardinality=64, num_codebooks=2)
    latent_meta = LatentMeta(model='//sig/y', frame_rate=50., dim=3)
    for split in SPLITS:
        write_token_shards(tmp_path / 'tok' / split,
                           [torch.randint(0, 64, (2, n), generator=gen) for n in (30, 60, 90)], token_meta)
        write_latent_files(tmp_path / 'lat' / split, [torch.randn(3, n, generator=gen) for n in (30, 60, 90)],
                           latent_meta)
    cfg = make_cfg({s: str(tmp_path / 'tok' / s) for s in SPLITS}, 'dataset.kind=tokens',
                   'dataset.segment_duration=1.0', 'dataset.valid.num_samples=5')
    loaders = get_dataloaders(cfg, updates_per_epoch=3)
    assert all(loader_length(loader) is None for loader in loaders.values())  # iterable: length unknown
    train = list(loaders['train'])
    assert len(train) == 3 and all(b['tokens'].shape == (2, 2, 50) and b['tokens'].dtype == torch.long
                                   for b in train)
    assert sum(len(b['paths']) for b in loaders['valid']) == 5
    evaluate = list(loaders['evaluate'])  # whole items of 30, 60, 90 frames cropped to 50, in order
    assert [m for b in evaluate for m in b['mask'].sum(-1).tolist()] == [30, 50, 50]
    cfg = make_cfg({s: str(tmp_path / 'lat' / s) for s in SPLITS}, 'dataset.kind=latents',
                   'dataset.segment_duration=0.4')
    loaders = get_dataloaders(cfg, updates_per_epoch=2)
    batch = next(iter(loaders['train']))
    assert set(batch) == {'latents', 'mask', 'paths', 'scale'} and batch['latents'].shape == (2, 3, 20)
    assert loader_length(loaders['valid']) == 2  # map-style: three files, batches of two


def test_unknown_kind_and_datasource_limits(audio_root):
    with pytest.raises(KeyError, match='dataset.kind'):
        get_dataloaders(make_cfg(sources(audio_root), 'dataset.kind=video'))
    with pytest.raises(ValueError, match=r'datasource\.max_sample_rate=8000'):
        get_dataloaders(make_cfg(sources(audio_root), 'sample_rate=16000'))
    with pytest.raises(ValueError, match=r'datasource\.max_channels=1'):
        get_dataloaders(make_cfg(sources(audio_root), 'channels=2'))
    unset = make_cfg(sources(audio_root), 'dataset.segment_duration=0.5')
    unset.datasource.max_sample_rate = '???'  # a datasource that does not say is not checked
    assert set(get_dataloaders(unset, updates_per_epoch=1)) == set(SPLITS)


def test_solver_builder_delegates(audio_root):
    from audiogen_lab.solvers.builders import get_audio_datasets
    cfg = make_cfg(sources(audio_root), 'dataset.segment_duration=0.5')
    ours, theirs = get_dataloaders(cfg, updates_per_epoch=2), get_audio_datasets(cfg, updates_per_epoch=2)
    assert set(ours) == set(theirs)
    for split in SPLITS:
        a, b = next(iter(ours[split])), next(iter(theirs[split]))
        assert a['paths'] == b['paths'] and torch.equal(a['audio'], b['audio']) and torch.equal(a['mask'], b['mask'])
