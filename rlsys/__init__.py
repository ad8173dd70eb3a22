"""rlsys: a single-controller RL framework for LLMs. `from rlsys import DataProto`."""

from rlsys.protocol import DataProto, DataProtoFuture

__all__ = ["DataProto", "DataProtoFuture"]
