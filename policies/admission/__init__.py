"""A learned admission policy: store an incoming page or skip it, under a storage budget.

features.py computes cheap features of each turn; model.py scores them (logistic or tiny MLP) and
gates the scores under the budget; train.py trains the scorer with REINFORCE on evidence recall of
later questions (LoCoMo); policy.py applies it to observations; plugin.py registers it.
numpy only: importing this package never loads torch.
"""

from __future__ import annotations

from .features import FEATURES, FeatureExtractor, Turn, features_of
from .model import AdmissionModel, BudgetGate, gate
from .policy import AdmissionPolicy
from .train import Conversation, Question, TrainConfig, TrainReport, evaluate, load_locomo, prepare, reinforce

__all__ = [
    "FEATURES",
    "AdmissionModel",
    "AdmissionPolicy",
    "BudgetGate",
    "Conversation",
    "FeatureExtractor",
    "Question",
    "TrainConfig",
    "TrainReport",
    "Turn",
    "evaluate",
    "features_of",
    "gate",
    "load_locomo",
    "prepare",
    "reinforce",
]
