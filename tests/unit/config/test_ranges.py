"""Issue 16.1: every numeric key has a range (or a stated reason for none), checked by `check_config`.

The walk enumerates the schema's int and float fields, so a new numeric key fails here until
it is added to `rlsys.config.ranges.RANGES` or `UNRANGED`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlsys.config import schema
from rlsys.config.checks import check_config
from rlsys.config.ranges import RANGES, UNRANGED, Range

ROOT = Path(__file__).resolve().parents[3]


def numeric_keys(cls=schema.RLConfig, prefix: str = "") -> dict[str, type]:
    """Dotted key -> int or float, for every numeric field (Optional included) of the schema."""
    hints = typing.get_type_hints(cls, vars(schema))
    found = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
        if dataclasses.is_dataclass(base):
            found.update(numeric_keys(base, f"{prefix}{f.name}."))
        elif base in (int, float):
            found[f"{prefix}{f.name}"] = base
    return found


def set_key(config, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        config = getattr(config, part)
    setattr(config, last, value)


def out_of_range_values(valid: Range, kind: type) -> list:
    step = 1 if kind is int else 1e-3
    values = []
    if valid.low is not None:
        values.append(valid.low if valid.low_open else valid.low - step)
    if valid.high is not None:
        values.append(valid.high + step if not valid.high_open else valid.high)
    if kind is float:
        values.append(math.nan)
    if not valid.nullable and kind is int and valid.low is None and valid.high is None:
        values.append(None)
    return [int(v) if kind is int and v is not None else v for v in values]


def test_every_numeric_key_has_a_range_or_a_reason():
    keys = numeric_keys()
    assert "trainer.total_steps" in keys and "reward.timeout_s" in keys  # the walk sees nested/Optional keys
    missing = sorted(set(keys) - set(RANGES) - set(UNRANGED))
    assert missing == [], f"numeric keys without a range in rlsys/config/ranges.py: {missing}"
    stale = sorted((set(RANGES) | set(UNRANGED)) - set(keys))
    assert stale == [], f"keys in rlsys/config/ranges.py that the schema does not have: {stale}"


def test_defaults_pass_and_each_out_of_range_value_fails_naming_its_key():
    check_config(schema.RLConfig(), cuda_available=False)
    tried = 0
    for key, kind in numeric_keys().items():
        valid = RANGES.get(key, Range())
        values = out_of_range_values(valid, kind)
        assert values, key
        for value in values:
            config = schema.RLConfig()
            set_key(config, key, value)
            with pytest.raises(ValueError, match=rf"^{key.replace('.', '[.]')}=") as info:
                check_config(config, cuda_available=False)
            assert "out of range" in str(info.value) or "finite" in str(info.value), str(info.value)
            tried += 1
    assert tried >= len(RANGES)


@pytest.mark.parametrize("key, value, message", [
    ("trainer.total_steps", -1, "trainer.total_steps=-1 is out of range: must be >= 1"),
    ("data.max_response_length", -8, "data.max_response_length=-8 is out of range: must be >= 1"),
    ("rollout.top_p", 0.0, "rollout.top_p=0.0 is out of range: must be > 0 and <= 1"),
    ("reward.timeout_s", 0.0, "reward.timeout_s=0.0 is out of range: must be > 0 (or null)"),
])
def test_issue_examples_name_the_key_and_range(key, value, message):
    config = schema.RLConfig()
    set_key(config, key, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_config(config, cuda_available=False)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "configs" / "recipe").glob("*.yaml")))
def test_every_recipe_is_in_range(recipe):
    from hydra import compose, initialize_config_dir

    schema.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose(config_name="config", overrides=[f"+recipe={recipe}"])
    check_config(OmegaConf.to_object(cfg), cuda_available=False)


@pytest.mark.parametrize("steps", [[0], [2, "x"], [1.5]])
def test_profile_steps_must_be_training_steps(steps):
    config = schema.RLConfig()
    config.trainer.profile_steps = steps
    with pytest.raises(ValueError, match=r"^trainer[.]profile_steps="):
        check_config(config, cuda_available=False)
    config.trainer.profile_steps = [1, 3]
    check_config(config, cuda_available=False)
