"""Reference role: the frozen initial policy, scored for the KL term."""

from __future__ import annotations

from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register
from rlsys.workers.policy import PolicyModelMixin


class ReferenceWorker(Worker, PolicyModelMixin):
    """Reference role: frozen initial policy weights, used for the KL term."""

    def __init__(self, config, model_path: str):
        super().__init__()
        self.config = config
        self.model_path = model_path

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        self.model = self._load_policy(self.config, trainable=False)
        self.model.eval()

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        return self._log_probs(self.model, data, "ref_log_prob", with_entropy=False)
