"""Tokenizing a manifest to acoustic and semantic token shards, the producer check, and the CLI."""
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.audio import audio_read, audio_write
from audiogen_lab.data.audio_dataset import find_audio_files, load_audio_meta, save_audio_meta
from audiogen_lab.data.manifest import AudioMeta
from audiogen_lab.data.token_dataset import TokenShardDataset, load_token_meta
from audiogen_lab.data.tokenize import check_token_producer, split_chunks, tokenize_manifest, weights_sha256
from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.semantic_tokenizer import (LogMelFeatures, fit_semantic_tokenizer, load_semantic_tokenizer,
                                                    save_semantic_tokenizer)
from audiogen_lab.solvers.loading import load_model
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint

from ..conftest import experiments_folder, load_script

tokenize_script = load_script('tokenize_dataset')
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope='module')
def codec_sig(tmp_path_factory):
    """`//sig/SIG` of a compression/debug codec (random weights: 16 kHz mono, 100 Hz, 8 x 64 codes), stored as
    the checkpoint of an XP without training it."""
    with experiments_folder(tmp_path_factory.mktemp('dora')) as folder:
        xp = main.get_xp(["solver=compression/debug"])
        torch.manual_seed(0)
        model = get_compression_model(xp.cfg)
        model.encode(torch.randn(4, 1, 16000))  # codebooks are initialised from the first batch, as in training
        checkpoint.save_checkpoint({'xp.cfg': OmegaConf.to_yaml(xp.cfg), 'xp.sig': xp.sig,
                                    'best_state': {'states': {'model': model.state_dict()}}},
                                   folder / 'xps' / xp.sig / checkpoint.CHECKPOINT_NAME)
        yield f"//sig/{xp.sig}"


@pytest.fixture(scope='module')
def semantic_file(tiny_dataset, tmp_path_factory) -> Path:
    """A log-mel tokenizer (50 Hz, 8 ids) fitted on two clips of the tiny dataset."""
    clips = [audio_read(tiny_dataset / 'train' / f"clip_00{i}.wav")[0] for i in range(2)]
    tokenizer, _ = fit_semantic_tokenizer(LogMelFeatures(16000, 50, n_mels=16), [torch.cat(clips)], 8,
                                          batch_size=64, iters=10, restarts=1)
    path = tmp_path_factory.mktemp('semantic') / 'tok.th'
    save_semantic_tokenizer(tokenizer, path)
    return path


def _items(folder: Path):
    return list(TokenShardDataset(folder, segment_duration=None, shuffle=False, pad=False))


def test_split_chunks():
    assert split_chunks(100, None) == [(0, 100)]
    assert split_chunks(100, 100) == [(0, 100)]
    assert split_chunks(100, 30) == [(0, 30), (30, 60), (60, 100)]  # 10 left over: joins the last chunk
    assert split_chunks(110, 30) == [(0, 30), (30, 60), (60, 90), (90, 110)]  # 20 >= 15: a chunk of its own


def test_script_tokenizes_the_tiny_dataset(tiny_dataset, codec_sig, semantic_file, tmp_path, capsys):
    manifest = tiny_dataset / 'train' / 'data.jsonl'
    out = tmp_path / 'tokens'
    assert tokenize_script.main([str(manifest), str(out), '--compression-model', codec_sig, '--n-q', '4',
                                 '--semantic-tokenizer', str(semantic_file), '--batch-size', '3']) == 0
    printed = capsys.readouterr().out
    assert 'acoustic: 8 items, 800 frames of 4 x 64 codes at 100 Hz' in printed
    assert 'semantic: 8 items, 400 frames of 1 x 8 codes at 50 Hz' in printed
    assert '8.0 s of audio tokenized' in printed and '0 files skipped' in printed

    acoustic, _ = load_token_meta(out / 'acoustic')
    semantic, _ = load_token_meta(out / 'semantic')
    codec = load_model(codec_sig, family='compression')
    sig = codec_sig[len('//sig/'):]
    assert (acoustic.model, acoustic.frame_rate, acoustic.cardinality, acoustic.num_codebooks,
            acoustic.sample_rate) == (codec_sig, 100., 64, 4, 16000)
    assert acoustic.extra['signature'] == sig and acoustic.extra['weights_sha256'] == weights_sha256(codec)
    tokenizer = load_semantic_tokenizer(semantic_file)
    assert (semantic.model, semantic.frame_rate, semantic.cardinality, semantic.num_codebooks,
            semantic.sample_rate) == (tokenizer.id, 50., 8, 1, 16000)
    assert semantic.extra['tokenizer'] == str(semantic_file.resolve())

    acoustic_items, semantic_items = _items(out / 'acoustic'), _items(out / 'semantic')
    sources = [meta.path for meta in load_audio_meta(manifest)]
    assert [item['path'] for item in acoustic_items] == sources == [item['path'] for item in semantic_items]
    assert np.load(out / 'acoustic' / 'shard_00000.npy').dtype == np.int16
    codec.set_num_codebooks(4)
    for a_item, s_item in zip(acoustic_items, semantic_items):
        # 1 s clips: 100 codec frames and 50 semantic frames, as the frame rates say.
        assert a_item['tokens'].shape == (4, 100) and s_item['tokens'].shape == (1, 50)
        assert a_item['tokens'].dtype == torch.long and s_item['tokens'].dtype == torch.long
        assert 0 <= a_item['tokens'].min() and a_item['tokens'].max() < 64
        assert 0 <= s_item['tokens'].min() and s_item['tokens'].max() < 8
        wav, _ = audio_read(a_item['path'])
        assert torch.equal(a_item['tokens'], codec.encode(wav[None])[0][0])  # the codes of that very file
        assert torch.equal(s_item['tokens'][0], tokenizer.encode(wav, 16000)[0])
    assert len(torch.cat([item['tokens'][0] for item in semantic_items]).unique()) > 2  # not one constant id

    with pytest.raises(FileExistsError, match='overwrite'):
        tokenize_script.main([str(manifest), str(out), '--semantic-tokenizer', str(semantic_file)])


@pytest.fixture
def mixed_manifest(tmp_path) -> Path:
    """Files of several lengths, rates and channels, and a manifest entry whose file is broken."""
    gen = torch.Generator().manual_seed(0)
    folder = tmp_path / 'audio'
    for name, rate, channels, seconds in [('a.wav', 16000, 1, 1.0), ('b.wav', 22050, 2, 0.75),
                                          ('c.wav', 16000, 1, 1.0), ('d.wav', 16000, 1, 0.4)]:
        audio_write(folder / name, 0.1 * torch.randn(channels, int(rate * seconds), generator=gen), rate)
    metas = find_audio_files(folder)
    (folder / 'broken.wav').write_bytes(b'RIFF....WAVEfmt this is not audio')
    metas.insert(1, AudioMeta(path=str(folder / 'broken.wav'), duration=1.0, sample_rate=16000, channels=1))
    save_audio_meta(folder / 'data.jsonl', metas)
    return folder / 'data.jsonl'


def test_chunks_keep_frame_counts_and_items_line_up(mixed_manifest, codec_sig, semantic_file, tmp_path):
    whole = tokenize_manifest(mixed_manifest, tmp_path / 'whole', compression_model=codec_sig,
                              semantic_tokenizer=str(semantic_file), batch_size=2)
    chunked = tokenize_manifest(mixed_manifest, tmp_path / 'chunked', compression_model=codec_sig,
                                semantic_tokenizer=str(semantic_file), batch_size=2, max_seconds=0.3)
    assert set(whole) == {'acoustic', 'semantic'} and whole['acoustic'] == tmp_path / 'whole' / 'acoustic'
    names = ['a.wav', 'b.wav', 'c.wav', 'd.wav']  # manifest order, without the broken file
    # ceil(T / 160) codec frames and floor(T / 320) semantic frames at 16 kHz, chunked or not.
    expected = {'a.wav': (100, 50), 'b.wav': (75, 37), 'c.wav': (100, 50), 'd.wav': (40, 20)}
    for result in (whole, chunked):
        acoustic, semantic = _items(result['acoustic']), _items(result['semantic'])
        assert [Path(item['path']).name for item in acoustic] == names
        assert [item['path'] for item in acoustic] == [item['path'] for item in semantic]
        assert {Path(a['path']).name: (a['tokens'].shape[-1], s['tokens'].shape[-1])
                for a, s in zip(acoustic, semantic)} == expected
        meta, _ = load_token_meta(result['acoustic'])
        assert meta.extra['skipped'] == [str(mixed_manifest.parent / 'broken.wav')]
        assert meta.extra['audio_seconds'] == pytest.approx(2.4 + int(22050 * 0.75) / 22050)
    # Chunks of 0.3 s (15 semantic frames): ids away from the chunk edges are those of the whole file.
    first_whole, first_chunked = _items(whole['semantic'])[0]['tokens'][0], _items(chunked['semantic'])[0]['tokens'][0]
    inner = torch.cat([torch.arange(0, 13), torch.arange(17, 28), torch.arange(32, 50)])
    assert torch.equal(first_whole[inner], first_chunked[inner])


def test_dedup_tokenizer_collapses_runs_over_whole_files(tiny_dataset, semantic_file, tmp_path):
    tokenizer = load_semantic_tokenizer(semantic_file)
    tokenizer.dedup = True
    save_semantic_tokenizer(tokenizer, tmp_path / 'dedup.th')
    out = tokenize_manifest(tiny_dataset / 'train', tmp_path / 'tokens', semantic_tokenizer=str(tmp_path / 'dedup.th'),
                            max_seconds=0.3)
    plain = tokenize_manifest(tiny_dataset / 'train', tmp_path / 'plain', semantic_tokenizer=str(semantic_file),
                              max_seconds=0.3)
    assert set(out) == {'semantic'} and load_token_meta(out['semantic'])[0].extra['dedup'] is True
    for item, full in zip(_items(out['semantic']), _items(plain['semantic'])):
        ids = item['tokens'][0]
        # Runs are collapsed across chunk boundaries too: no two equal neighbours anywhere.
        assert torch.equal(ids, torch.unique_consecutive(full['tokens'][0]))
        assert (ids[1:] != ids[:-1]).all() and len(ids) < 50


def test_check_token_producer(tiny_dataset, codec_sig, semantic_file, tmp_path):
    out = tokenize_manifest(tiny_dataset / 'train', tmp_path / 'tokens', compression_model=codec_sig,
                            semantic_tokenizer=str(semantic_file), n_q=2)
    assert check_token_producer(out['acoustic'], codec_sig, 'acoustic').num_codebooks == 2
    # Another name of the same checkpoint file is the same producer.
    assert check_token_producer(out['acoustic'], str(checkpoint.resolve_checkpoint_path(codec_sig)), 'acoustic')
    with pytest.raises(ValueError, match=r"acoustic tokens were produced by '//sig/.*compression_model_checkpoint="
                                         r"'//sig/other'") as err:
        check_token_producer(out['acoustic'], '//sig/other', 'acoustic')
    assert str(out['acoustic']) in str(err.value)

    identity = load_semantic_tokenizer(semantic_file).id
    assert check_token_producer(out['semantic'], str(semantic_file), 'semantic').model == identity
    assert check_token_producer(out['semantic'], identity, 'semantic')
    tokenizer = load_semantic_tokenizer(semantic_file)
    tokenizer.centroids.add_(1.0)
    other_id = save_semantic_tokenizer(tokenizer, tmp_path / 'other.th')
    with pytest.raises(ValueError, match=rf"produced by '{identity}'.*semantic_tokenizer_checkpoint=.*{other_id}"):
        check_token_producer(out['semantic'], str(tmp_path / 'other.th'), 'semantic')
    with pytest.raises(ValueError, match="holds semantic tokens, not acoustic tokens"):
        check_token_producer(out['semantic'], codec_sig, 'acoustic')


def test_errors(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match='compression_model, semantic_tokenizer and / or mulan'):
        tokenize_manifest(tiny_dataset / 'train', tmp_path / 'out')
    with pytest.raises(SystemExit):
        tokenize_script.main([str(tiny_dataset / 'train'), str(tmp_path / 'out')])
