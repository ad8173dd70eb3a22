"""Sequence scores placed on the last valid response token."""

import pytest
import torch

from rlsys.algorithms import scores_to_token_level


def test_score_on_last_valid_token():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]])  # row 3 has a hole
    out = scores_to_token_level(torch.tensor([1.0, 2.0, 3.0, -1.0]), mask)
    expected = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 0.0, -1.0]])
    assert torch.equal(out, expected)


def test_accepts_a_list_and_integer_scores():
    out = scores_to_token_level([1, 0], torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert out.dtype == torch.float32
    assert out.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        scores_to_token_level(torch.tensor([1.0, 2.0, 3.0]), torch.ones(2, 3))
