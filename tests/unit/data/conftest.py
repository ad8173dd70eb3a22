"""Fixtures for data tests: the tiny character tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    from rlsys.models.tiny import build_tokenizer

    return build_tokenizer()

