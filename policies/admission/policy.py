"""The admission policy: store an incoming turn only when its score ranks it within the storage budget.

Each observation is scored by an `AdmissionModel` over its features (features.py) and passed through
a `BudgetGate` (model.py): at every point of the input at most a fraction `budget` of the turns seen
has been stored. An admitted turn becomes one insert of its text, as a short-term page labelled
`type=episode` like an ingested turn, with the observation's session, turn id and speaker as provenance.

Which model: the one passed in (an AdmissionModel or a path to its JSON), else the one `memos train
admission` saved in the memos home (`<home>/policies/admission.json`), else the hand-written heuristic.
The budget: the one passed in, else the one the model was trained for, else 25 %.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memos.cube import Level, Namespace
from memos.policy import MemoryOp, Observation, OpKind, Policy

from .features import FeatureExtractor, Turn
from .model import AdmissionModel, BudgetGate, check_budget

if TYPE_CHECKING:
    from memos.kernel import Session

#: where `memos train admission` saves a model inside a memos home, and where the policy looks for one
HOME_MODEL = Path("policies") / "admission.json"
#: the budget when neither the caller nor the model names one
DEFAULT_BUDGET = 0.25
#: provenance fields an observation's metadata may carry over to the stored page
_PROVENANCE = ("session_id", "turn_id", "external_id")


class AdmissionPolicy(Policy):
    """Admits the best-scoring turns within a storage budget; skips the rest."""

    name = "admission"

    def __init__(
        self,
        model: AdmissionModel | str | Path | None = None,
        *,
        budget: float | None = None,
        window: int | None = None,
        level: Level = Level.short,
    ) -> None:
        if budget is not None:
            check_budget(budget)
        self._budget = budget
        self._window = window
        self.level = level
        #: the scorer; None until the first observation when it comes from the home (or the heuristic)
        self.model: AdmissionModel | None = AdmissionModel.load(model) if isinstance(model, str | Path) else model
        #: the gate deciding under the budget; made with the model, reset with every new input
        self.gate: BudgetGate | None = None
        self._features = FeatureExtractor()
        #: the score of the last observation, for explanations and tests
        self.last_score: float | None = None

    @property
    def budget(self) -> float:
        """The storage budget in force (the caller's, else the model's, else DEFAULT_BUDGET)."""
        if self._budget is not None:
            return self._budget
        if self.model is not None and self.model.budget is not None:
            return self.model.budget
        return DEFAULT_BUDGET

    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """One insert when the turn is admitted, none when it is skipped (an empty text is not a turn)."""
        if not observation.text.strip():
            return []
        model, gate = self._ready(session)
        meta = observation.metadata
        turn = Turn(
            text=observation.text,
            speaker=observation.speaker,
            session=_text(meta.get("session_id")),
            turn_id=_text(meta.get("external_id") or meta.get("turn_id")),
        )
        score = float(model.score(self._features.add(turn)[None, :])[0])
        self.last_score = score
        if not gate.admit(score):
            return []
        provenance = {key: _text(meta[key]) for key in _PROVENANCE if meta.get(key) is not None}
        if observation.speaker:
            provenance["speaker"] = observation.speaker
        return [
            MemoryOp(
                kind=OpKind.insert,
                text=observation.text,
                level=self.level,
                labels={"type": "episode"},
                provenance=provenance,
            )
        ]

    def reset(self) -> None:
        """Start a new input: no turns seen, the whole budget free."""
        self._features.reset()
        if self.gate is not None:
            self.gate.reset()
        self.last_score = None

    def _ready(self, session: Session) -> tuple[AdmissionModel, BudgetGate]:
        """The model (loaded on first use) and the gate."""
        if self.model is None:
            saved = Path(session.mos.home) / HOME_MODEL
            self.model = AdmissionModel.load(saved) if saved.is_file() else AdmissionModel.heuristic()
        if self.gate is None:
            self.gate = BudgetGate(self.budget, self._window or self.model.window)
        return self.model, self.gate


def _text(value: object) -> str | None:
    return None if value is None else str(value)
