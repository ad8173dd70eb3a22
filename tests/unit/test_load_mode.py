"""Which receivers load through vLLM's layerwise reload (repacking backends) and which directly."""

from types import SimpleNamespace

import pytest
import torch

from rlsys.weight_sync.receiver import needs_layerwise_reload

UNQUANTISED = SimpleNamespace(quantization=None)
FP8 = SimpleNamespace(quantization="fp8")


def test_auto_is_layerwise_on_cpu_and_for_quantised_models_direct_on_cuda():
    assert needs_layerwise_reload(torch.device("cpu"), UNQUANTISED)
    assert not needs_layerwise_reload(torch.device("cuda", 0), UNQUANTISED)
    assert needs_layerwise_reload(torch.device("cuda", 0), FP8)


def test_explicit_modes_override_auto_and_unknown_mode_names_the_key():
    assert not needs_layerwise_reload(torch.device("cpu"), UNQUANTISED, "direct")
    assert needs_layerwise_reload(torch.device("cuda", 0), UNQUANTISED, "layerwise")
    with pytest.raises(ValueError, match="weight_sync.load_mode='fast'"):
        needs_layerwise_reload(torch.device("cpu"), UNQUANTISED, "fast")
