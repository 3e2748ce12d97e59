"""The trainers taidpt runs, their accepted alternative spellings and their config nodes.

Torch-free, so the command line can list the trainers in ``--help`` without loading a model.
"""

from __future__ import annotations

# TRAINER.<node> holding each trainer's settings (MERGE_RATE, PREC, ...); its keys are the trainers.
TRAINER_NODES = {"TaIDPT": "TAIDPT", "ZeroshotCLIPDense": "ZEROSHOT", "DualCoOp": "DUALCOOP", "CoOpMultiLabel": "COOP"}
TRAINERS = tuple(TRAINER_NODES)
# CoOp's and the reference code's names for the same trainers.
TRAINER_ALIASES = {"ZeroshotCLIP": "ZeroshotCLIPDense", "ZeroshotCLIP_dense": "ZeroshotCLIPDense",
                   "Caption_distill_double": "TaIDPT", "Caption_dual": "DualCoOp"}

__all__ = ["TRAINERS", "TRAINER_ALIASES", "TRAINER_NODES"]
