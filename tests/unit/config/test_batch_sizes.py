import pytest

from rlsys.config.batch_sizes import derive_batch_shapes


def test_derived_shapes_for_grpo_layout():
    shapes = derive_batch_shapes(prompts_per_step=16, samples_per_prompt=4, num_ranks=2,
                                 mini_batch_size=32, micro_batch_size_per_rank=4)
    assert shapes.sequences_per_step == 64
    assert shapes.sequences_per_rank == 32
    assert shapes.mini_batches_per_epoch == 2
    assert shapes.grad_accum_steps == 4  # 32 / 2 ranks / 4 per micro
    table = shapes.table()
    assert "sequences per step" in table and "| 64" in table


def test_mini_batch_that_does_not_divide_names_keys_and_nearest_values():
    with pytest.raises(ValueError, match=r"actor.ppo_mini_batch_size=24 must divide .*=64.*nearest valid values.*32"):
        derive_batch_shapes(16, 4, 1, 24, 4)


def test_micro_batch_that_does_not_divide_per_rank_mini_batch():
    with pytest.raises(ValueError, match=r"actor.micro_batch_size_per_rank=5 .* 16 / 2 = 8.*nearest valid values"):
        derive_batch_shapes(16, 2, 2, 16, 5)


def test_mini_batch_must_split_evenly_over_ranks():
    with pytest.raises(ValueError, match="multiple of 4"):
        derive_batch_shapes(12, 1, 4, 6, 1)


def test_token_budget_shows_in_the_table_and_must_be_positive():
    import pytest

    shapes = derive_batch_shapes(16, 4, 1, 32, 8, max_tokens_per_micro_batch=1024)
    assert "actor.max_tokens_per_micro_batch" in shapes.table() and "1024" in shapes.table()
    assert "actor.max_tokens_per_micro_batch" not in derive_batch_shapes(16, 4, 1, 32, 8).table()
    with pytest.raises(ValueError, match="critic.max_tokens_per_micro_batch=0"):
        derive_batch_shapes(16, 4, 1, 32, 8, prefix="critic", max_tokens_per_micro_batch=0)
