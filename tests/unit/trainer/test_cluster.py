"""Which Ray a run uses (rlsys/trainer/cluster.py): trainer.ray_address, RAY_ADDRESS, and the
keys that cannot go together. No Ray is started here."""

from __future__ import annotations

import pytest

from rlsys.config.schema import RLConfig
from rlsys.trainer.cluster import cluster_runtime_env, ray_address


def config(**trainer):
    cfg = RLConfig()
    for key, value in trainer.items():
        setattr(cfg.trainer, key, value)
    return cfg


def test_address_comes_from_the_key_then_ray_address_env_else_local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(config()) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ray_address(config()) == "10.0.0.5:6379"
    assert ray_address(config(ray_address="10.0.0.7:6379")) == "10.0.0.7:6379"
    assert ray_address(config(ray_address="local")) is None


def test_num_cpus_with_an_address_and_ray_client_fail_naming_the_keys(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match=r"trainer.ray_num_cpus=4 .* trainer.ray_address='h:6379'"):
        ray_address(config(ray_address="h:6379", ray_num_cpus=4))
    assert ray_address(config(ray_address="local", ray_num_cpus=4)) is None  # a local Ray takes num_cpus
    with pytest.raises(ValueError, match=r"trainer.ray_address='ray://h:10001': Ray Client"):
        ray_address(config(ray_address="ray://h:10001"))


def test_joining_ships_rlsys_and_the_working_dir_and_drops_local_paths(tmp_path):
    env = cluster_runtime_env(config(ray_working_dir=str(tmp_path)),
                              {"env_vars": {"PYTHONPATH": "/here/only", "A": "1"}, "worker_process_setup_hook": "x"})
    assert env["env_vars"] == {"A": "1"} and env["worker_process_setup_hook"] == "x"
    assert [p.rsplit("/", 1)[-1] for p in env["py_modules"]] == ["rlsys"]
    assert env["working_dir"] == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="trainer.ray_working_dir='/no/such/dir' is not a directory"):
        cluster_runtime_env(config(ray_working_dir="/no/such/dir"), {})
