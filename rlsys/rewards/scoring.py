"""Batch scoring around a per-sample reward function, with the `reward.on_error` policy.

    score_batch = make_reward_fn(None, on_error="zero", format_score=0.1)
    scores, errors = score_batch(["gsm8k"], ["#### 3"], ["3"], [None])   # [1.0], []

A reward function that raises (or returns something that is not a finite number) on a sample
either stops the run with `RewardScoringError` naming the sample ("raise"), or scores that
sample 0.0 and records it in `errors` ("zero"); the reward worker reports `len(errors)` as
the metric `reward/num_errors`. A function may return a float or, as verl allows, a dict with
a "score" entry. `format_score` is passed to functions that take a `format_score` argument
(the built-in verifiers do); others ignore it. `timeout_s` bounds each call
(`rlsys.rewards.bounded`: the function runs in a child process, killed on a timeout).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Sequence

from rlsys.rewards.bounded import BoundedCaller
from rlsys.rewards.loading import load_reward_fn

ON_ERROR_CHOICES = ("raise", "zero")
_MAX_SHOWN_CHARS = 400  # longer responses are shortened in error messages

ScoreBatch = Callable[..., tuple[list[float], list[dict]]]


class RewardScoringError(RuntimeError):
    """A reward function raised on a sample; the message names the sample and the cause."""


def _shorten(text: str) -> str:
    if len(text) <= _MAX_SHOWN_CHARS:
        return text
    half = _MAX_SHOWN_CHARS // 2
    return f"{text[:half]}...[{len(text) - 2 * half} chars]...{text[-half:]}"


def _accepts_format_score(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False
    return "format_score" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def as_score(result) -> float:
    """A reward function's return value as a finite float; TypeError/ValueError otherwise."""
    if isinstance(result, dict):
        if "score" not in result:
            raise TypeError(f"returned a dict without a 'score' entry (keys {sorted(result)})")
        result = result["score"]
    if isinstance(result, (str, bytes)) or result is None:
        raise TypeError(f"returned {result!r}, not a number")
    value = float(result)
    if not math.isfinite(value):
        raise ValueError(f"returned a non-finite score {value}")
    return value


def prepare_reward_fn(fn_spec: str | None, format_score: float = 0.0):
    """`reward.fn` loaded, with `format_score` bound where the function takes it."""
    fn = load_reward_fn(fn_spec)
    if _accepts_format_score(fn):
        fn = functools.partial(fn, format_score=format_score)
    return fn


def _in_process(fn):
    def outcomes(samples):
        for i, args in enumerate(samples):
            try:
                yield i, as_score(fn(*args)), None
            except Exception as exc:  # noqa: BLE001 -- any failure of user code is reported per sample
                yield i, None, exc
    return outcomes


def make_reward_fn(fn_spec: str | None, on_error: str = "raise", format_score: float = 0.0,
                   timeout_s: float | None = None) -> ScoreBatch:
    """`score_batch(data_sources, texts, ground_truths, extra_infos) -> (scores, errors)`.

    `fn_spec` is `reward.fn` (None: built-in verifiers by data_source); `extra_infos` may be
    None (every sample gets None). Each error is a dict with keys index, data_source,
    response, ground_truth, error ("ExceptionType: message"). With `timeout_s` the function runs
    in a child process and a call over `timeout_s` is killed and fails its sample
    (`rlsys.rewards.bounded`); None: in this process, unbounded.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"reward.on_error={on_error!r}: expected one of {ON_ERROR_CHOICES}")
    fn = prepare_reward_fn(fn_spec, format_score)  # loaded here too, so a bad spec fails at start
    name = fn_spec or "built-in"
    outcomes = _in_process(fn) if timeout_s is None else BoundedCaller(fn_spec, format_score, timeout_s).outcomes

    def score_batch(data_sources: Sequence, texts: Sequence[str], ground_truths: Sequence,
                    extra_infos: Sequence | None = None) -> tuple[list[float], list[dict]]:
        if not len(data_sources) == len(texts) == len(ground_truths):
            raise ValueError(f"score_batch: {len(data_sources)} data_sources, {len(texts)} texts, "
                             f"{len(ground_truths)} ground_truths")
        samples = [(data_sources[i], text, ground_truths[i], None if extra_infos is None else extra_infos[i])
                   for i, text in enumerate(texts)]
        scores, errors = [], []
        for i, score, exc in outcomes(samples):
            if exc is None:
                scores.append(score)
                continue
            cause = f"{type(exc).__name__}: {exc}"
            if on_error == "raise":
                raise RewardScoringError(
                    f"reward function {name} failed on sample {i} (data_source={data_sources[i]!r}, "
                    f"response={_shorten(str(texts[i]))!r}, ground_truth={ground_truths[i]!r}): {cause}; "
                    "set reward.on_error=zero to score such samples 0 and count them"
                ) from exc
            scores.append(0.0)
            errors.append({"index": i, "data_source": data_sources[i], "response": texts[i],
                           "ground_truth": ground_truths[i], "error": cause})
        return scores, errors

    return score_batch
