"""Config checks: one-line errors naming the key, on the composed configs of the real config tree."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.config_check import (RULES, ConfigError, check_added_keys, closest_keys, group_options,
                                       split_added_keys, unknown_option_message, validate_config)
from audiogen_lab.train import main

SOLVERS = [name for name in group_options("solver") if name != "default" and not name.endswith("/default")]


def _cfg(*overrides: str):
    return main.get_xp(["solver=compression/debug", *overrides]).cfg


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_config_passes(solver):
    validate_config(main.get_xp([f"solver={solver}"]).cfg, check_device=False)


@pytest.fixture(scope="module")
def debug_cfg():
    return main.get_xp(["solver=compression/debug"]).cfg


def _with(cfg, **values):
    """A copy of `cfg` with dotted keys (``__`` for ``.``) set to `values`."""
    cfg = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


@pytest.mark.parametrize("key, value, message", [
    ("optim.lr", "abc", "optim.lr='abc'; expected a positive number"),
    ("optim.lr", 0, "optim.lr=0; expected a positive number"),
    ("optim.epochs", -1, "optim.epochs=-1; expected a positive integer"),
    ("optim.epochs", 2.5, "optim.epochs=2.5; expected a positive integer"),
    ("optim.updates_per_epoch", 0, "optim.updates_per_epoch=0; expected a positive integer or null"),
    ("dataset.batch_size", 0, "dataset.batch_size=0; expected a positive integer"),
    ("dataset.evaluate.batch_size", -4, "dataset.evaluate.batch_size=-4; expected a positive integer or null"),
    ("dataset.num_workers", -1, "dataset.num_workers=-1; expected an integer >= 0"),
    ("optim.max_norm", -1.0, "optim.max_norm=-1.0; expected a number >= 0"),
    ("optim.ema.decay", 1.5, "optim.ema.decay=1.5; expected a number in [0, 1]"),
    ("autocast_dtype", "half", "autocast_dtype='half'; expected one of float16, bfloat16, float32"),
    ("device", "gpu", "device='gpu'; expected auto, cpu, cuda, cuda:N or mps"),
    ("seed", "abc", "seed='abc'; expected an integer"),
    ("sample_rate", "16k", "sample_rate='16k'; expected a positive integer"),
    ("channels", 0, "channels=0; expected a positive integer"),
    ("dataset.segment_duration", -1.0, "dataset.segment_duration=-1.0; expected a positive number"),
    ("checkpoint.keep_last", -2, "checkpoint.keep_last=-2; expected an integer >= 0 or null"),
    ("checkpoint.save_every", 0, "checkpoint.save_every=0; expected a positive integer or null"),
    ("schedule.lr_scheduler", "cosin", "schedule.lr_scheduler='cosin'; expected null or one of cosine"),
    ("execute_only", "train", "execute_only='train'; expected null or one of valid, evaluate, generate"),
])
def test_bad_value_names_the_key_and_form(debug_cfg, key, value, message):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(debug_cfg, **{key.replace(".", "__"): value}), check_device=False)
    text = str(info.value)
    assert text.startswith("Invalid config: ") and message in text and "\n" not in text


def test_command_line_values_are_parsed_as_hydra_does():
    with pytest.raises(ConfigError, match="optim.lr='abc'"):
        validate_config(_cfg("optim.lr=abc"), check_device=False)
    with pytest.raises(ConfigError, match="optim.epochs=-1;"):
        validate_config(_cfg("optim.epochs=-1"), check_device=False)
    validate_config(_cfg("optim.lr=1e-3", "dataset.segment_duration=2"), check_device=False)


def test_good_values_pass(debug_cfg):
    validate_config(_with(debug_cfg, optim__lr=1, optim__epochs=1, optim__updates_per_epoch=None, seed=-3,
                          checkpoint__keep_last=0, device="cpu", autocast_dtype="float16", logging__level="debug",
                          schedule__lr_scheduler="cosine", dataset__segment_duration=2))


def test_mandatory_value_left_unset():
    cfg = OmegaConf.create({"optim": {"lr": "???", "epochs": 1}})
    with pytest.raises(ConfigError, match=r"optim.lr is not set \(\?\?\?\)"):
        validate_config(cfg, check_device=False)
    validate_config(OmegaConf.create({"optim": {"updates_per_epoch": "???"}}), check_device=False)  # not required


def test_every_rule_rejects_a_string():
    for rule in RULES:
        if rule.key not in ("continue_from", "logging.level") and "*" not in rule.key:
            assert not rule.check("nonsense"), rule.key


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPU")
def test_cuda_without_gpu(debug_cfg):
    cfg = _with(debug_cfg, device="cuda")
    validate_config(cfg, check_device=False)  # a grid prepared on a login node
    with pytest.raises(ConfigError, match="device=cuda but this machine has no visible GPU"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="device=cuda:1"):
        validate_config(_with(debug_cfg, device="cuda:1"))


def test_added_key_is_refused_with_the_closest_existing_keys(debug_cfg):
    argv = ["solver=compression/debug", "+optim.lrr=1", "+dset=audio/example", "seed=3"]
    kept, added = split_added_keys(argv, main._config_groups)
    assert added == ["+optim.lrr=1"] and kept == ["solver=compression/debug", "+dset=audio/example", "seed=3"]
    reference = debug_cfg
    with pytest.raises(ConfigError) as info:
        check_added_keys(added, reference)
    text = str(info.value)
    assert "'optim.lrr'" in text and "did you mean optim.lr?" in text and "\n" not in text
    check_added_keys(["++optim.lr=1"], reference)  # an existing key: a plain override
    check_added_keys(["+seanet.norm_params.eps=1e-3", "+seanet.encoder.n_filters=4"], reference)  # kwargs nodes
    with pytest.raises(ConfigError, match="'seanet.normm'"):
        check_added_keys(["+seanet.normm=1"], reference)
    assert closest_keys("optimm.lr", reference)[0] == "optim.lr"
    assert closest_keys("optim.ema.decai", reference) == ["optim.ema.decay"]


def test_check_xp_runs_before_init_xp(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "+optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.lrr"):
        main.init_xp(xp)
    assert not (xp.folder / ".argv.json").exists()
    xp = main.get_xp(["solver=compression/debug", "optim.lr=abc"])
    with pytest.raises(ConfigError, match="optim.lr"):
        main.init_xp(xp)
    assert not xp.folder.exists()
    main.init_xp(main.get_xp(["solver=compression/debug", "device=cuda"]))  # device checked only when run


def test_solver_options_list_nested_files():
    options = group_options("solver")
    assert "compression/debug" in options and "compression/encodec_mmd_32khz" in options and "default" in options
    message = unknown_option_message("solver", "compression/debugg")
    assert "Did you mean compression/debug?" in message and "compression/encodec_24khz" in message
    assert "\n" not in message


def test_unknown_solver_and_keys_from_get_xp():
    with pytest.raises(ConfigError, match="Did you mean compression/debug?"):
        main.get_xp(["solver=compression/debugg"])
    with pytest.raises(ConfigError, match=r"Unknown config key 'optim.ema.decai' .* did you mean optim.ema.decay\?"):
        main.get_xp(["solver=compression/debug", "optim.ema.decai=0.9"])
    with pytest.raises(ConfigError, match="Invalid override 'optim.lr=\\['"):
        main.get_xp(["solver=compression/debug", "optim.lr=["])
