"""Config and command-line checks that fail fast with one line naming the key to fix.

:func:`validate_config` checks the values of the common keys (``config/config.yaml`` and
``config/solver/default.yaml``) against the declarative table :data:`RULES` before anything is built.
:func:`check_added_keys` refuses keys added on the command line with ``+key=value`` that no config
defines (no code would read them, yet they change the XP signature), and :func:`unknown_option_message`
turns Hydra's "could not find option" into the list of every option of the group, nested folders
included (``solver=compression/debug``).

Every error is a :class:`ConfigError` whose message is a single line.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import typing as tp
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

#: Config nodes (fnmatch patterns) whose keys are passed on as keyword arguments, so that
#: ``+node.name=value`` adds an argument some code does read: SEANet's encoder-only and decoder-only
#: options, and the parameters of its normalisation and activations.
FREE_FORM_NODES: tp.Tuple[str, ...] = ("seanet.encoder", "seanet.decoder", "*norm_params", "*activation_params")

_MISSING = object()


class ConfigError(ValueError):
    """A config value or command-line override is invalid; the message is one line naming the key."""


# ---------------------------------------------------------------------------------------- predicates
def _is_int(value: tp.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: tp.Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: tp.Any) -> bool:
    return _is_int(value) and value > 0


def non_negative_int(value: tp.Any) -> bool:
    return _is_int(value) and value >= 0


def positive_number(value: tp.Any) -> bool:
    return _is_number(value) and value > 0


def non_negative_number(value: tp.Any) -> bool:
    return _is_number(value) and value >= 0


def unit_interval(value: tp.Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def boolean(value: tp.Any) -> bool:
    return isinstance(value, bool)


def integer(value: tp.Any) -> bool:
    return _is_int(value)


def non_empty_string(value: tp.Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def optional(check: tp.Callable[[tp.Any], bool]) -> tp.Callable[[tp.Any], bool]:
    """``check``, or null."""
    return lambda value: value is None or check(value)


def one_of(*choices: tp.Any, case_insensitive: bool = False) -> tp.Callable[[tp.Any], bool]:
    if case_insensitive:
        lowered = {str(c).lower() for c in choices}
        return lambda value: isinstance(value, str) and value.lower() in lowered
    return lambda value: value in choices and not isinstance(value, bool)


def device_name(value: tp.Any) -> bool:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if not isinstance(value, str):
        return False
    if value in ("auto", "cpu", "cuda", "mps"):
        return True
    prefix, _, index = value.partition(":")
    return prefix == "cuda" and index.isdigit()


# ---------------------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Rule:
    """``key`` (``*`` matches any child node) must satisfy ``check``; ``expected`` says the form."""
    key: str
    check: tp.Callable[[tp.Any], bool]
    expected: str
    required: bool = False  # a ``???`` value is an error (otherwise the family may not use the key)


_SPLIT = "dataset.*"
RULES: tp.Tuple[Rule, ...] = (
    Rule("optim.lr", positive_number, "a positive number, e.g. 3e-4", required=True),
    Rule("optim.epochs", positive_int, "a positive integer", required=True),
    Rule("optim.updates_per_epoch", optional(positive_int), "a positive integer or null (one pass over the train set)"),
    Rule("optim.optimizer", one_of("adam", "adamw", "radam", "sgd"), "one of adam, adamw, radam, sgd"),
    Rule("best_metric.direction", optional(one_of("lower", "higher")), "null, lower or higher"),
    Rule("optim.max_norm", non_negative_number, "a number >= 0 (0: no clipping)"),
    Rule("optim.max_nonfinite_steps", positive_int, "a positive integer"),
    Rule("optim.ema.use", boolean, "true or false"),
    Rule("optim.ema.decay", unit_interval, "a number in [0, 1], e.g. 0.99"),
    Rule("optim.ema.updates", positive_int, "a positive integer"),
    Rule("schedule.lr_scheduler", optional(one_of("cosine", "linear_warmup", "inverse_sqrt", "step", "exponential")),
         "null or one of cosine, linear_warmup, inverse_sqrt, step, exponential"),
    Rule("dataset.batch_size", positive_int, "a positive integer (global, divided by the number of processes)",
         required=True),
    Rule(f"{_SPLIT}.batch_size", optional(positive_int), "a positive integer or null"),
    Rule("dataset.num_workers", non_negative_int, "an integer >= 0"),
    Rule(f"{_SPLIT}.num_workers", optional(non_negative_int), "an integer >= 0 or null"),
    Rule("dataset.segment_duration", optional(positive_number), "a positive number of seconds or null (whole files)"),
    Rule(f"{_SPLIT}.segment_duration", optional(positive_number), "a positive number of seconds or null"),
    Rule("dataset.num_samples", optional(positive_int), "a positive integer or null"),
    Rule(f"{_SPLIT}.num_samples", optional(positive_int), "a positive integer or null"),
    Rule("dataset.min_segment_ratio", unit_interval, "a number in [0, 1]"),
    Rule("dataset.max_failure_ratio", unit_interval, "a number in [0, 1]"),
    Rule("sample_rate", positive_int, "a positive integer (Hz)", required=True),
    Rule("channels", positive_int, "a positive integer", required=True),
    Rule("seed", integer, "an integer"),
    Rule("device", device_name, "auto, cpu, cuda, cuda:N or mps"),
    Rule("autocast", boolean, "true or false"),
    Rule("autocast_force", boolean, "true or false"),
    Rule("autocast_dtype", one_of("float16", "bfloat16", "float32"), "one of float16, bfloat16, float32"),
    Rule("show", boolean, "true or false"),
    Rule("execute_only", optional(one_of("valid", "evaluate", "generate")), "null or one of valid, evaluate, generate"),
    Rule("continue_from", optional(non_empty_string), "null, //sig/SIG, //pretrained/NAME or a checkpoint path"),
    Rule("num_threads", optional(positive_int), "a positive integer or null"),
    Rule("mp_start_method", optional(one_of("fork", "spawn", "forkserver")), "null or one of fork, spawn, forkserver"),
    Rule("logging.level", one_of("debug", "info", "warning", "error", "critical", case_insensitive=True),
         "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    Rule("logging.log_updates", non_negative_int, "an integer >= 0"),
    Rule("checkpoint.save_last", boolean, "true or false"),
    Rule("checkpoint.save_every", optional(positive_int), "a positive integer or null"),
    Rule("checkpoint.keep_last", optional(non_negative_int), "an integer >= 0 or null (keep all)"),
    Rule("evaluate.every", optional(positive_int), "a positive integer or null (last epoch only)"),
    Rule("generate.every", optional(positive_int), "a positive integer or null (last epoch only)"),
)


# ---------------------------------------------------------------------------------------- values
def _expand(cfg: DictConfig, key: str) -> tp.List[str]:
    """Concrete keys matching `key`, where ``*`` matches every child that is itself a node."""
    if "*" not in key:
        return [key]
    head, _, tail = key.partition(".*")
    node = OmegaConf.select(cfg, head, default=None)
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for child in node.keys():
        if isinstance(node.get(child), DictConfig):
            keys.extend(_expand(cfg, f"{head}.{child}{tail}"))
    return keys


def _lookup(cfg: DictConfig, key: str) -> tp.Any:
    """The resolved value at `key`, ``'???'`` when mandatory and unset, :data:`_MISSING` when absent."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():
        return _MISSING
    if OmegaConf.is_missing(parent, leaf):
        return "???"
    try:
        return parent[leaf]
    except Exception as err:  # an interpolation that does not resolve
        raise ConfigError(f"Invalid config: {key} does not resolve ({_first_line(err)}).") from err


def _show(value: tp.Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return repr(value)


def validate_config(cfg: DictConfig, check_device: bool = True) -> None:
    """Check the common keys of `cfg` against :data:`RULES`; raise :class:`ConfigError` on the first bad one.

    Keys a config does not define are skipped (families may drop them); ``???`` values are errors only
    for keys every run needs. With `check_device`, ``device=cuda`` also needs a visible GPU (turn it off
    where the run happens on another machine, e.g. when a grid is prepared on a login node).
    """
    for rule in RULES:
        for key in _expand(cfg, rule.key):
            value = _lookup(cfg, key)
            if value is _MISSING:
                continue
            if value == "???":
                if rule.required:
                    raise ConfigError(f"Invalid config: {key} is not set (???); expected {rule.expected}, "
                                      f"e.g. pass {key}=VALUE or pick a solver that sets it.")
                continue
            if not rule.check(value):
                raise ConfigError(f"Invalid config: {key}={_show(value)}; expected {rule.expected}.")
    if check_device:
        check_device_available(cfg.get("device", "auto"))


def check_device_available(device: tp.Any) -> None:
    """``device=cuda[:N]`` / ``mps`` must exist on this machine."""
    device = str(device)
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} visible GPU(s)" if count else "no visible GPU (torch.cuda.is_available() is False)"
            raise ConfigError(f"Invalid config: device={device} but this machine has {seen}; "
                              "use device=cpu or device=auto.")
    elif device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("Invalid config: device=mps but MPS is not available here; use device=cpu or device=auto.")


def check_checkpoint_reference(key: str, value: tp.Any) -> None:
    """`value` of `key` (``continue_from``, ``*_checkpoint``) names an existing checkpoint file:
    ``//sig/SIG``, an XP folder or a file path (``//pretrained/NAME`` is checked when loaded)."""
    from .utils.checkpoint import PRETRAINED_PREFIX, not_a_checkpoint_reason, resolve_checkpoint_path
    if value is None or str(value).startswith(PRETRAINED_PREFIX):
        return
    try:
        path = resolve_checkpoint_path(str(value))
    except FileNotFoundError as err:
        raise ConfigError(f"Invalid config: {key}={value}: {_first_line(err)}") from err
    reason = not_a_checkpoint_reason(path)
    if reason is not None:
        raise ConfigError(f"Invalid config: {key}={value}: {path} is not an audiogen_lab checkpoint ({reason}).")


# ---------------------------------------------------------------------------------------- overrides
def all_keys(cfg: DictConfig, prefix: str = "") -> tp.List[str]:
    """Every dotted key of `cfg` (nodes and leaves), without resolving interpolations."""
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys.extend(all_keys(child, full + "."))
    return keys


def closest_keys(key: str, cfg: DictConfig, n: int = 3) -> tp.List[str]:
    """The keys of `cfg` closest to `key`, best first: siblings with a similar name, else similar full keys."""
    candidates = all_keys(cfg)
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in candidates if k.rpartition(".")[0] == parent}
    found = [siblings[name] for name in difflib.get_close_matches(leaf, list(siblings), n=n, cutoff=0.6)]
    return found or difflib.get_close_matches(key, candidates, n=n, cutoff=0.8)


def split_added_keys(argv: tp.Sequence[str], groups: tp.Collection[str]) -> tp.Tuple[tp.List[str], tp.List[str]]:
    """Split command-line overrides into (the others, ``+key=v`` / ``++key=v`` on keys that are not
    config groups). ``+group=option`` adds a config file and is kept with the others."""
    kept, added = [], []
    for arg in argv:
        key = arg.split("=", 1)[0]
        if key.startswith("+"):
            name = key.lstrip("+").split("@", 1)[0]
            if name not in groups and not name.startswith("hydra."):
                added.append(arg)
                continue
        kept.append(arg)
    return kept, added


def check_added_keys(added: tp.Sequence[str], reference: DictConfig) -> None:
    """Refuse ``+key=value`` overrides whose key `reference` (the config composed without them) lacks.

    Such a key is read by no code, yet it changes the XP signature. Keys below :data:`FREE_FORM_NODES`
    are allowed; ``++key=value`` on an existing key is a plain override and is allowed.
    """
    for arg in added:
        key = arg.split("=", 1)[0].lstrip("+")
        if _below_free_form_node(key):
            continue
        if OmegaConf.select(reference, key, default=_MISSING) is not _MISSING:
            continue
        close = closest_keys(key, reference)
        hint = f"did you mean {', '.join(close)}?" if close else "no existing key is close."
        raise ConfigError(f"Unknown config key {key!r} in {arg!r}: no config defines it and no code reads it, "
                          f"but it would change the XP signature; {hint}")


def _below_free_form_node(key: str) -> bool:
    parts = key.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    return any(fnmatch.fnmatchcase(parent, pattern) for parent in parents for pattern in FREE_FORM_NODES)


# ---------------------------------------------------------------------------------------- group options
def group_options(group: str, config_dir: Path = CONFIG_DIR) -> tp.List[str]:
    """Every option of config group `group`, nested folders included: ``compression/debug``, ..."""
    root = config_dir / group
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def unknown_option_message(group: str, option: str, config_dir: Path = CONFIG_DIR) -> str:
    """One line for ``group=option`` naming the closest options and listing them all."""
    options = group_options(group, config_dir)
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]}?" if close else ""
    return f"Unknown {group}={option}: there is no config/{group}/{option}.yaml.{hint} " \
           f"Available {group} options: {', '.join(options)}."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
