"""Multi-turn, token-in/token-out agent rollouts (`rollout.multi_turn.enable=true`, docs/multi_turn.md).

`AgentLoop` advances every trajectory of a batch one model turn at a time (one engine
`generate` call per turn for all live trajectories), keeps the engine's token ids and
log-probs exactly as returned, and appends environment observations tokenised once.
"""

from rlsys.rollout.agent.loop import AgentLoop, check_multi_turn_config
from rlsys.rollout.agent.metrics import multi_turn_metrics
from rlsys.rollout.agent.observations import ObservationEncoder
from rlsys.rollout.agent.trajectory import Trajectory, pack_trajectories

__all__ = ["AgentLoop", "check_multi_turn_config", "multi_turn_metrics", "ObservationEncoder", "Trajectory",
           "pack_trajectories"]
