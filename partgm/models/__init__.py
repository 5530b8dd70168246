"""Networks: the DiT trunk (MDLM, AR) and the Partition Transformer (PGM). Free of I/O and of distributed logic."""

from partgm.models.dit import DiT
from partgm.models.init import randomize_
from partgm.models.partition import PartitionTransformer

__all__ = ["DiT", "PartitionTransformer", "randomize_"]
