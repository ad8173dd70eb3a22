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
        from rlsys.workers import model_utils

        device = model_utils.resolve_device(self.config.trainer.device)
        dtype = model_utils.resolve_dtype(self.config.ref.compute_dtype, device)  # frozen: no master copy
        # One rank: a plain module, so its forward issues no collectives and the driver may run
        # it beside the actor's old log-probs in the same process. Several: FSDP2 shards it.
        self._load_policy(self.config, trainable=False, param_dtype=dtype, compute_dtype=dtype,
                          chunk_size=self.config.actor.logprob_chunk_size, shard=self.world_size > 1,
                          compile_model=model_utils.use_torch_compile(self.config.actor.use_torch_compile, device),
                          attention_backend=self.config.actor.attention_backend)
        self.model.eval()

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        return self._log_probs(data, "ref_log_prob", with_entropy=False, micro_cfg=self.config.ref)
