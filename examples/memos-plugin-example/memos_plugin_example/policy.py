"""The `keep-questions` policy: remember only the chunks that ask something."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.cube import Level, Namespace
from memos.policy import MemoryOp, Observation, OpKind, Policy

if TYPE_CHECKING:
    from memos.kernel import Session


class KeepQuestionsPolicy(Policy):
    """Insert a chunk into long-term memory when it ends with a question mark; ignore the rest."""

    name = "keep-questions"

    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """One insert for a question, none otherwise."""
        if not observation.text.rstrip().endswith("?"):
            return []
        provenance = {
            key: str(observation.metadata[key])
            for key in ("session_id", "external_id")
            if observation.metadata.get(key)
        }
        if observation.speaker:
            provenance["speaker"] = observation.speaker
        return [
            MemoryOp(
                OpKind.insert,
                text=observation.text,
                level=Level.long,
                labels={"type": "question"},
                provenance=provenance,
            )
        ]
