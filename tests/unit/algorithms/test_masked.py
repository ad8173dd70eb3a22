"""Masked reductions against hand-computed numbers on a ragged 2x3 example."""

import math

import pytest
import torch

from rlsys.algorithms import masked_mean, masked_sum, masked_var, masked_whiten

# valid entries: 1, 2 (row 0) and 4 (row 1); mean 7/3, unbiased var 7/3, biased var 14/9
X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_sum_and_mean():
    assert masked_sum(X, MASK).item() == 7.0
    assert masked_sum(X, MASK, dim=-1).tolist() == [3.0, 4.0]
    assert masked_mean(X, MASK).item() == pytest.approx(7 / 3)
    assert masked_mean(X, MASK, dim=-1).tolist() == [1.5, 4.0]


def test_bool_mask_matches_float_mask():
    assert masked_mean(X, MASK.bool(), dim=-1).tolist() == [1.5, 4.0]
    assert masked_mean(X, MASK.bool()).item() == pytest.approx(7 / 3)


def test_empty_mask_gives_zero_mean():
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_mean(X, mask, dim=-1).tolist() == [1.0, 0.0]
    assert masked_mean(X, torch.zeros_like(X)).item() == 0.0


def test_var_unbiased_and_biased():
    # deviations -4/3, -1/3, 5/3 -> squares sum to 42/9 = 14/3
    assert masked_var(X, MASK).item() == pytest.approx(7 / 3)
    assert masked_var(X, MASK, unbiased=False).item() == pytest.approx(14 / 9)


def test_var_single_entry_is_zero():
    mask = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_var(X, mask).item() == 0.0


def test_whiten():
    std = math.sqrt(7 / 3)
    out = masked_whiten(X, MASK)
    expected = torch.tensor([[-4 / 3 / std, -1 / 3 / std, 0.0], [5 / 3 / std, 0.0, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_whiten_without_mean_shift_keeps_the_mean():
    std = math.sqrt(7 / 3)
    out = masked_whiten(X, MASK, shift_mean=False)
    m = 7 / 3
    expected = torch.tensor([[-4 / 3 / std + m, -1 / 3 / std + m, 0.0], [5 / 3 / std + m, 0.0, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_masked_positions_never_matter_even_nan():
    x = X.clone()
    x[0, 2], x[1, 1], x[1, 2] = float("nan"), float("inf"), -1e9
    assert masked_sum(x, MASK).item() == 7.0
    assert masked_mean(x, MASK, dim=-1).tolist() == [1.5, 4.0]
    assert masked_var(x, MASK).item() == pytest.approx(7 / 3)
    torch.testing.assert_close(masked_whiten(x, MASK), masked_whiten(X, MASK))
