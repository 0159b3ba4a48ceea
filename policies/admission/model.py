"""The admission scorer (a logistic score or a one-hidden-layer MLP over the turn features) and the budget gate.

`AdmissionModel.score(X)` maps feature rows to real scores; higher means more worth storing. The
features are standardised with the mean and scale of the training turns, stored with the weights.
Saved as one JSON file (weights as lists), so a trained policy can be read and diffed by eye.

`BudgetGate` turns scores into store/skip decisions online, under a storage budget B (a fraction of
the turns seen): turn t is stored when

* the budget has room: stored + 1 <= floor(B * (t + 1)) — at every prefix of the input at most a
  fraction B is stored, so the budget is respected at all times, never only on average; and
* its score ranks among the top share f of the last `window` scores (its own included), where
  f = B + (credit - 1) / window, credit = floor(B * (t + 1)) - stored. Unused credit thus widens the
  share, so a stretch of dull turns is made up for later and the input ends close to B exactly.

Training samples the same kind of decision (the best turns of each window-sized block, see train.py).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memos.errors import UserError

from .features import FEATURES, NUM_FEATURES

FORMAT = "memos-admission-v1"
#: the default window of the budget gate (turns)
WINDOW = 100

#: the hand-written heuristic: novelty, informative tokens and length count for a turn, a question against
#: it (weights on the raw features; fixed before any training or evaluation run)
HEURISTIC_WEIGHTS = {
    "novelty": 1.0,
    "entities": 1.0,
    "numbers": 1.0,
    "dates": 1.0,
    "length": 0.5,
    "question": -1.0,
}


class AdmissionModel:
    """score(x) = w2 . tanh(W1 z + b1) + b2 (hidden > 0) or w . z + b (hidden = 0), z = (x - mean) / scale."""

    def __init__(
        self,
        params: dict[str, np.ndarray],
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        *,
        features: Sequence[str] = FEATURES,
        name: str = "trained",
        budget: float | None = None,
        window: int = WINDOW,
    ) -> None:
        if tuple(features) != FEATURES:
            raise UserError(
                f"this admission model was made for features {list(features)}, but this version computes "
                f"{list(FEATURES)}; train it again with `memos train admission`"
            )
        #: weights: {"w", "b"} (linear) or {"w1", "b1", "w2", "b2"} (MLP); float64 arrays
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        #: feature standardisation; scale is never zero
        self.mean = np.zeros(NUM_FEATURES) if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = np.ones(NUM_FEATURES) if scale is None else np.asarray(scale, dtype=np.float64)
        #: shown in reports ("trained", "heuristic", ...)
        self.name = name
        #: the storage budget the model was trained for (None: not trained for one) and its gate window
        self.budget = budget
        self.window = window
        self._check()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def initial(cls, features: np.ndarray, *, hidden: int = 0, seed: int = 0) -> AdmissionModel:
        """An untrained model standardised on these feature rows: zero scores (linear) or small random ones."""
        features = np.asarray(features, dtype=np.float64)
        mean = features.mean(axis=0) if len(features) else np.zeros(NUM_FEATURES)
        scale = features.std(axis=0) if len(features) else np.ones(NUM_FEATURES)
        scale = np.where(scale > 1e-8, scale, 1.0)
        if hidden <= 0:
            params = {"w": np.zeros(NUM_FEATURES), "b": np.zeros(1)}
        else:
            rng = np.random.default_rng(seed)
            params = {
                "w1": rng.normal(0.0, 1.0 / math.sqrt(NUM_FEATURES), (hidden, NUM_FEATURES)),
                "b1": np.zeros(hidden),
                "w2": np.zeros(hidden),
                "b2": np.zeros(1),
            }
        return cls(params, mean, scale)

    @classmethod
    def heuristic(cls) -> AdmissionModel:
        """The fixed hand-written scorer (HEURISTIC_WEIGHTS on the raw features)."""
        w = np.array([HEURISTIC_WEIGHTS.get(name, 0.0) for name in FEATURES])
        return cls({"w": w, "b": np.zeros(1)}, name="heuristic")

    # ---- scoring and gradients ----------------------------------------------------------------

    @property
    def hidden(self) -> int:
        """Hidden units (0 for the linear scorer)."""
        return int(self.params["w1"].shape[0]) if "w1" in self.params else 0

    def score(self, features: np.ndarray) -> np.ndarray:
        """One score per feature row."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        if self.hidden == 0:
            return z @ self.params["w"] + self.params["b"][0]
        h = np.tanh(z @ self.params["w1"].T + self.params["b1"])
        return h @ self.params["w2"] + self.params["b2"][0]

    def backward(self, features: np.ndarray, grad_scores: np.ndarray) -> dict[str, np.ndarray]:
        """d(sum_i grad_scores[i] * score_i) / d(params): the gradient a policy-gradient step ascends."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        g = np.asarray(grad_scores, dtype=np.float64)
        if self.hidden == 0:
            return {"w": g @ z, "b": np.array([g.sum()])}
        h = np.tanh(z @ self.params["w1"].T + self.params["b1"])
        gh = np.outer(g, self.params["w2"]) * (1.0 - h**2)
        return {"w1": gh.T @ z, "b1": gh.sum(axis=0), "w2": g @ h, "b2": np.array([g.sum()])}

    def weights(self) -> dict[str, float]:
        """The linear weights per feature in raw units (linear models only; {} for an MLP)."""
        if self.hidden:
            return {}
        return {name: float(w) for name, w in zip(FEATURES, self.params["w"] / self.scale, strict=True)}

    # ---- saving and loading -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the model."""
        return {
            "format": FORMAT,
            "name": self.name,
            "budget": self.budget,
            "window": self.window,
            "features": list(FEATURES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "params": {k: v.tolist() for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "the admission model") -> AdmissionModel:
        """The model a `to_dict` document describes."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserError(f"{where} is not a memos admission model (format {FORMAT!r}); train one first")
        try:
            params = {str(k): np.asarray(v, dtype=np.float64) for k, v in doc["params"].items()}
            return cls(
                params,
                np.asarray(doc["mean"], dtype=np.float64),
                np.asarray(doc["scale"], dtype=np.float64),
                features=doc["features"],
                name=str(doc.get("name", "trained")),
                budget=None if doc.get("budget") is None else float(doc["budget"]),
                window=int(doc.get("window", WINDOW)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{where} is damaged ({exc}); train it again") from None

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to `path` (parent folders are made); return the path."""
        out = Path(path)
        if out.is_dir():
            raise UserError(f"{out} is a folder; pass a file path for the admission model, e.g. {out}/admission.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> AdmissionModel:
        """Read a model `save` wrote."""
        where = Path(path)
        try:
            doc = json.loads(where.read_text())
        except FileNotFoundError:
            raise UserError(f"no admission model at {where}; train one with `memos train admission`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read the admission model {where}: {exc}") from None
        return cls.from_dict(doc, str(where))

    def _check(self) -> None:
        shapes = {k: v.shape for k, v in self.params.items()}
        linear = set(shapes) == {"w", "b"} and shapes["w"] == (NUM_FEATURES,) and shapes["b"] == (1,)
        mlp = set(shapes) == {"w1", "b1", "w2", "b2"}
        if mlp:
            h = shapes["w1"][0]
            mlp = shapes == {"w1": (h, NUM_FEATURES), "b1": (h,), "w2": (h,), "b2": (1,)}
        ok = (linear or mlp) and self.mean.shape == (NUM_FEATURES,) and self.scale.shape == (NUM_FEATURES,)
        if not ok:
            raise UserError(f"admission model weights have the wrong shapes {shapes}; train the model again")
        if (
            not all(np.isfinite(v).all() for v in (*self.params.values(), self.mean, self.scale))
            or (self.scale <= 0).any()
        ):
            raise UserError("admission model weights are not finite (or a scale is not positive); train it again")
        if self.budget is not None:
            check_budget(self.budget)
        if self.window < 1:
            raise UserError(f"the gate window must be at least 1 turn, got {self.window}")


class BudgetGate:
    """Online store/skip decisions under a storage budget (a fraction of the turns seen); see the module doc."""

    def __init__(self, budget: float, window: int = WINDOW) -> None:
        check_budget(budget)
        if window < 1:
            raise UserError(f"the gate window must be at least 1 turn, got {window}")
        self.budget = budget
        self.window = window
        #: the last `window` scores, the current one included once `admit` has seen it
        self._recent: deque[float] = deque(maxlen=window)
        #: turns seen and turns admitted; num_stored <= floor(budget * num_seen) always
        self.num_seen = 0
        self.num_stored = 0

    def reset(self) -> None:
        """Start a new input."""
        self._recent.clear()
        self.num_seen = self.num_stored = 0

    def allowance(self) -> int:
        """How many turns could be stored now without exceeding the budget at this prefix."""
        return allowed(self.budget, self.num_seen) - self.num_stored

    def admit(self, score: float) -> bool:
        """Decide one turn from its score (call in input order)."""
        self.num_seen += 1
        self._recent.append(float(score))
        credit = self.allowance()
        if credit < 1:
            return False
        share = min(1.0, self.budget + (credit - 1) / self.window)
        better = sum(1 for s in self._recent if s > score)
        if better < math.ceil(share * len(self._recent) - 1e-9):
            self.num_stored += 1
            return True
        return False


def allowed(budget: float, num_seen: int) -> int:
    """floor(budget * num_seen), robust to float error (0.25 * 4 is 1, never 0.999...)."""
    return math.floor(budget * num_seen + 1e-9)


def check_budget(budget: float) -> None:
    """Raise UserError unless 0 < budget <= 1."""
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1:
        raise UserError(f"the storage budget is a fraction of the turns, above 0 and at most 1; got {budget!r}")


def gate(scores: Sequence[float] | np.ndarray, budget: float, window: int = WINDOW) -> np.ndarray:
    """The BudgetGate's decisions for a whole input at once (a boolean array)."""
    g = BudgetGate(budget, window)
    return np.array([g.admit(float(s)) for s in scores], dtype=bool)
