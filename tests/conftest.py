"""Shared fixtures: every test gets its own Dora experiments folder and never touches the user's."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("AUDIOGEN_LAB_DORA_DIR", "/tmp/audiogen_lab_tests_dora")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
