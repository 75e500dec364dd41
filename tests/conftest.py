"""Shared fixtures: every test gets its own Dora experiments folder and never touches the user's."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("AUDIOGEN_LAB_DORA_DIR", "/tmp/audiogen_lab_tests_dora")
torch.set_num_threads(min(2, torch.get_num_threads()))


@contextlib.contextmanager
def experiments_folder(folder):
    """Point Dora and ``//sig/`` resolution at `folder` inside the block (for module-scoped fixtures)."""
    from audiogen_lab.environment import AudioGenEnvironment
    from audiogen_lab.train import main

    old_env, old_dir = os.environ.get("AUDIOGEN_LAB_DORA_DIR"), main.dora.dir
    os.environ["AUDIOGEN_LAB_DORA_DIR"] = str(folder)
    AudioGenEnvironment.reset()
    main.dora.dir = folder
    try:
        yield folder
    finally:
        main.dora.dir = old_dir
        if old_env is not None:
            os.environ["AUDIOGEN_LAB_DORA_DIR"] = old_env
        AudioGenEnvironment.reset()


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: fastest for them, and no fight for the cores with
    other processes (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_script(name: str):
    """The command ``scripts/<name>.py`` imported as a module (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dora_dir(tmp_path, monkeypatch):
    """Point Dora and ``//sig/`` resolution at a fresh folder."""
    from audiogen_lab.environment import AudioGenEnvironment
    from audiogen_lab.train import main

    folder = tmp_path / "dora"
    monkeypatch.setenv("AUDIOGEN_LAB_DORA_DIR", str(folder))
    AudioGenEnvironment.reset()
    old = main.dora.dir
    main.dora.dir = folder
    yield folder
    main.dora.dir = old
    AudioGenEnvironment.reset()


def real_example_data(folder: Path, **options) -> Path:
    """The example dataset (rendered MIDI music, synthesized speech) built into `folder` at 16 kHz with seed 0
    (`options` go to `build_example_dataset`); skips the test where fluidsynth, espeak-ng or a SoundFont is
    missing."""
    import shutil

    from audiogen_lab.data.example import build_example_dataset, find_soundfont

    missing = [tool for tool in ("fluidsynth", "espeak-ng") if shutil.which(tool) is None]
    if missing or find_soundfont() is None:
        pytest.skip(f"the real example data needs fluidsynth, espeak-ng and a SoundFont (missing: "
                    f"{missing or ['SoundFont']}): run `make system-deps`")
    build_example_dataset(folder, sample_rate=16000, seed=0, workers=2, verbose=False, **options)
    return folder


def tiny_autoencoder_export(folder: Path, sample_rate: int = 16000) -> str:
    """Export a debug consistency autoencoder (random weights, seeded; 8-d latents at sample_rate / 256
    frames/s) like a trained one, into `folder`; returns the export's path."""
    from omegaconf import OmegaConf

    from audiogen_lab.models.builders import get_compression_model
    from audiogen_lab.utils import checkpoint
    from audiogen_lab.utils.export import export_checkpoint

    cfg = OmegaConf.merge(OmegaConf.load(Path(__file__).resolve().parents[1] / 'config' / 'model' / 'consistency_ae'
                                         / 'debug.yaml'),
                          {'solver': 'compression', 'sample_rate': sample_rate, 'channels': 1})
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    ckpt = checkpoint.save_checkpoint({'xp.cfg': OmegaConf.to_yaml(cfg), 'xp.sig': 'cae1',
                                       'best_state': {'states': {'model': model.state_dict()}}},
                                      Path(folder) / 'checkpoint.th')
    return str(export_checkpoint(ckpt, Path(folder) / 'cae.th'))


def _tonal_clip(gen: torch.Generator, duration: float, sample_rate: int) -> torch.Tensor:
    """A few harmonic notes with decaying envelopes and a little noise: music-like, never silent. [1, T]"""
    import math
    length = int(duration * sample_rate)
    t = torch.arange(length) / sample_rate
    wav = torch.zeros(length)
    note_len = length // 4
    for start in range(0, length, note_len):
        f0 = 110 * 2 ** (float(torch.randint(0, 36, (1,), generator=gen)) / 12)
        seg = t[: min(note_len, length - start)]
        env = torch.exp(-3 * seg) * (1 - torch.exp(-200 * seg))
        note = sum(torch.sin(2 * math.pi * f0 * k * seg) / k for k in range(1, 6))
        wav[start:start + seg.numel()] += 0.3 * env * note
    wav += 0.003 * torch.randn(length, generator=gen)
    return wav[None]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Generated tonal clips at 16 kHz with a manifest per split: eight 1 s clips for train and valid,
    two 4 s clips for evaluate and generate."""
    from audiogen_lab.data.audio import audio_write
    from audiogen_lab.data.audio_dataset import find_audio_files, save_audio_meta

    root = tmp_path_factory.mktemp("tiny_dataset")
    gen = torch.Generator().manual_seed(0)
    train = [_tonal_clip(gen, 1.0, 16000) for _ in range(8)]
    splits = {"train": train, "valid": train,  # a small task: learn to code these eight clips
              "evaluate": [_tonal_clip(gen, 4.0, 16000) for _ in range(2)],
              "generate": [_tonal_clip(gen, 4.0, 16000) for _ in range(2)]}
    for split, clips in splits.items():
        folder = root / split
        for index, clip in enumerate(clips):
            audio_write(folder / f"clip_{index:03d}.wav", clip, 16000)
        save_audio_meta(folder / "data.jsonl", find_audio_files(folder))
    return root


def dataset_overrides(root) -> list:
    """Overrides pointing every split of the datasource at `root/<split>`."""
    return [f"datasource.{split}={root / split}" for split in ("train", "valid", "evaluate", "generate")]
