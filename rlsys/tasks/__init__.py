"""Built-in tasks with verifiable rewards (prompt rows + a reward function), no downloads."""

from rlsys.tasks.arithmetic import arithmetic_reward, make_arithmetic_dataset

__all__ = ["arithmetic_reward", "make_arithmetic_dataset"]
