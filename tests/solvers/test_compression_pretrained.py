"""`continue_from=//pretrained/encodec_24khz`: Meta's released EnCodec converted into our model, ready to
fine-tune with the compression solver (tested with a random model of the encodec package saved as the
released file)."""
from __future__ import annotations

import pytest
import torch

from audiogen_lab.models.pretrained import get_pretrained_model
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.train import main

from ..conftest import dataset_overrides
from ..models.test_pretrained import _package_model


@pytest.mark.slow
def test_continue_from_pretrained_encodec_loads_converted_weights(tiny_dataset, dora_dir, tmp_path, monkeypatch):
    package = _package_model("encodec_24khz")
    torch.save(package.state_dict(), tmp_path / "encodec_24khz-d7cc33bc.th")
    monkeypatch.setenv("AUDIOGEN_LAB_PRETRAINED_DIR", str(tmp_path))
    xp = main.get_xp(["solver=compression/encodec_24khz_meta", "continue_from=//pretrained/encodec_24khz",
                      "dataset.batch_size=2", "dataset.num_workers=0"] + dataset_overrides(tiny_dataset))
    with xp.enter():
        solver = get_solver(xp.cfg)
        assert not solver.restore()  # a new XP: initialised from continue_from
    reference = get_pretrained_model("encodec_24khz")
    for key, value in reference.state_dict().items():
        assert torch.equal(solver.model.state_dict()[key], value), key
    for key, value in solver.ema.state.items():  # the EMA starts from the converted weights
        torch.testing.assert_close(value, reference.state_dict()[key.split(".", 1)[1]])
    wav = torch.randn(1, 1, 24000) * 0.1
    solver.model.eval()
    package.eval()
    with torch.no_grad():
        codes = solver.model.encode(wav)[0]
        frames = package.encode(wav)
    expected = frames[0][0].long()
    assert codes.shape == expected.shape == (1, 32, 75)
    torch.testing.assert_close(codes[:, :4], expected[:, :4])  # deeper levels may flip on float near-ties
    assert float((codes == expected).float().mean()) > 0.97
