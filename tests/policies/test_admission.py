"""The admission policy: exact features, the budget gate, REINFORCE on synthetic talks, saving, and the kernel."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cli import Cli

from memos import MemOS
from memos.embed import HashingEmbedder
from memos.errors import UserError
from memos.ingest import iter_requests
from memos.policies.admission import plugin
from memos.policies.admission.features import FEATURES, FeatureExtractor, Turn, feature_dict, features_of
from memos.policies.admission.model import AdmissionModel, BudgetGate, gate
from memos.policies.admission.policy import HOME_MODEL, AdmissionPolicy
from memos.policies.admission.train import (
    Retriever,
    TrainConfig,
    conversation_from_sample,
    evaluate,
    load_locomo,
    prepare,
    reinforce,
    sample_admission,
)
from memos.policy import Observation, apply_ops

# ---- synthetic LoCoMo-format conversations -------------------------------------------------------------

NAMES = ["Lisbon", "Oslo", "Kyoto", "Denver", "Quito", "Malta", "Tallinn", "Austin", "Hanoi", "Porto", "Cairo", "Lima"]
THINGS = ["violin", "kayak", "telescope", "bakery", "garden", "novel", "marathon", "puppy", "camper", "guitar"]
FILLER = [
    "haha that is so cool, thanks",
    "wow, nice, love that",
    "awesome, sounds great",
    "oh really? that is lovely",
    "totally, so glad to hear it",
    "cool cool, good for you",
]


def synthetic_sample(index: int, rng: random.Random, turns: int = 40) -> dict[str, Any]:
    """A two-speaker talk: every fourth turn states a fact (a place, a thing, a date), the rest is small talk."""
    sessions: dict[str, Any] = {}
    qa = []
    speakers = ("Ann", "Ben")
    for number in range(1, turns // 10 + 1):
        rows = []
        for i in range(1, 11):
            speaker = speakers[i % 2]
            dia = f"D{number}:{i}"
            if i % 4 == 2:
                place, thing = rng.choice(NAMES), rng.choice(THINGS)
                year = rng.randint(2001, 2023)
                text = f"I bought a {thing} in {place} last May {year} with my friend Carla."
                qa.append({"question": f"What did {speaker} buy in {place}?", "evidence": [dia], "category": 4})
            else:
                text = rng.choice(FILLER)
            rows.append({"speaker": speaker, "dia_id": dia, "text": text})
        sessions[f"session_{number}"] = rows
        sessions[f"session_{number}_date_time"] = "1:56 pm on 8 May, 2023"
    conversation = {"speaker_a": "Ann", "speaker_b": "Ben", **sessions}
    return {"sample_id": f"conv-{index}", "conversation": conversation, "qa": qa}


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [synthetic_sample(i, rng) for i in range(8)]


@pytest.fixture(scope="module")
def data_file(samples: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("locomo") / "synthetic.json"
    path.write_text(json.dumps(samples))
    return path


# ---- features --------------------------------------------------------------------------------------------


def test_features_of_hand_made_turns_are_exact() -> None:
    turns = [
        Turn("Alice: Hi Bob! How are you?", "Alice", "session_1"),
        Turn("Bob: I moved to Lisbon in May 2023 with Carol.", "Bob", "session_1"),
        Turn("Alice: Wow! [shares an image: a photo of a cat]", "Alice", "session_2"),
    ]
    rows = features_of(turns)
    assert rows.shape == (3, len(FEATURES)) and rows.dtype == np.float32
    vectors = HashingEmbedder(256).embed([t.text for t in turns])
    log = math.log1p
    expected = [
        {
            "novelty": 1.0,
            "new_words": 1.0,  # hi, bob
            "entities": log(1),  # Bob (not yet a speaker)
            "numbers": 0.0,
            "dates": 0.0,
            "main_speaker": 1.0,
            "length": log(5),
            "question": 1.0,
            "position": 0.0,
            "image": 0.0,
            "first_person": 0.0,
            "chitchat": log(1),  # hi
            "reply": 0.0,
        },
        {
            "novelty": 1.0 - float(vectors[0] @ vectors[1]),
            "new_words": 1.0,  # moved, lisbon, may, 2023, carol: none seen before
            "entities": log(3),  # Lisbon, May, Carol ("I" and the speakers' names do not count)
            "numbers": log(1),  # 2023
            "dates": log(1),  # may
            "main_speaker": 0.0,
            "length": log(9),
            "question": 0.0,
            "position": log(1),
            "image": 0.0,
            "first_person": log(1),  # I
            "chitchat": 0.0,
            "reply": 1.0,  # Alice asked, Bob answers
        },
        {
            "novelty": 1.0 - float(max(vectors[0] @ vectors[2], vectors[1] @ vectors[2])),
            "new_words": 1.0,  # wow
            "entities": 0.0,
            "numbers": 0.0,
            "dates": 0.0,
            "main_speaker": 1.0,
            "length": log(1),
            "question": 0.0,
            "position": 0.0,  # a new session starts
            "image": 1.0,
            "first_person": 0.0,
            "chitchat": log(1),  # wow
            "reply": 0.0,  # Bob did not ask anything
        },
    ]
    for row, want in zip(rows, expected, strict=True):
        assert feature_dict(row) == pytest.approx(want, abs=1e-6)

    # online extraction gives the same rows, and reset starts over
    extractor = FeatureExtractor()
    online = [extractor.add(t) for t in turns]
    extractor.reset()
    assert np.array_equal(np.stack(online), rows)
    assert np.array_equal(extractor.add(turns[0]), rows[0])


def test_repeated_words_lower_new_words_and_novelty() -> None:
    rows = features_of([Turn("A: I adopted a cat named Pixel", "A"), Turn("B: a cat named Pixel", "B")])
    first, second = feature_dict(rows[0]), feature_dict(rows[1])
    assert second["new_words"] == 0.0  # cat, named, pixel: all seen
    assert second["novelty"] < first["novelty"] == 1.0


def test_turn_texts_are_what_memos_ingest_stores(samples: list[dict[str, Any]], tmp_path: Path) -> None:
    sample = samples[0]
    sample["conversation"]["session_1"][0]["blip_caption"] = "a photo of a kayak"
    path = tmp_path / "one.json"
    path.write_text(json.dumps(sample))
    conv = conversation_from_sample(sample)
    ingested = [request.text for _, request in iter_requests(path, "locomo")]
    del sample["conversation"]["session_1"][0]["blip_caption"]
    assert [t.text for t in conv.turns] == ingested
    assert conv.turns[0].text.endswith(" [shares an image: a photo of a kayak]")
    assert conv.questions[0].evidence == (1,)  # D1:2 is the second turn


# ---- the gate and the retriever ----------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5, 1.0])
def test_the_gate_never_stores_more_than_the_budget_at_any_point(budget: float) -> None:
    for seed in range(5):
        scores = np.random.default_rng(seed).normal(size=300)
        stored = gate(scores, budget, window=40)
        prefix = np.cumsum(stored)
        assert all(prefix[t] <= math.floor(budget * (t + 1) + 1e-9) for t in range(300))
        # unused credit widens the share, so the input ends close to the budget
        assert prefix[-1] >= math.floor(budget * 300) - 3


def test_the_gate_prefers_high_scores_and_counts_what_it_did() -> None:
    g = BudgetGate(0.25, window=8)
    decisions = [g.admit(s) for s in [0, 0, 0, 9, 0, 0, 0, 9, 1, 1, 1, 1]]
    assert decisions == [False, False, False, True, False, False, False, True, False, False, False, True]
    assert (g.num_seen, g.num_stored, g.allowance()) == (12, 3, 0)
    g.reset()
    assert (g.num_seen, g.num_stored) == (0, 0)
    with pytest.raises(UserError, match="above 0 and at most 1"):
        BudgetGate(1.5)


def test_bm25_searches_only_the_stored_turns() -> None:
    turns = ["Ann: I bought a kayak in Oslo", "Ben: haha cool", "Ann: the kayak is red", "Ben: I love Kyoto"]
    retriever = Retriever(turns, ["What did Ann buy in Oslo?", "Where is the kayak?"])
    everything = np.ones(4, dtype=bool)
    # the shorter turn wins on "kayak" (BM25 length normalisation)
    assert retriever.top(everything, k=2).tolist() == [[0, 2], [2, 0]]
    some = np.array([False, True, True, True])
    assert retriever.top(some, k=1).tolist() == [[2], [2]]
    assert retriever.recall(some, [(0,), (0, 2)], k=1).tolist() == [0.0, 0.5]
    assert retriever.recall(np.zeros(4, dtype=bool), [(0,), ()]).tolist() == [0.0, 1.0]


def test_the_sampling_gradient_is_the_gradient_of_the_log_probability() -> None:
    scores = np.random.default_rng(3).normal(size=7)

    def log_prob(s: np.ndarray, order: list[int]) -> float:
        remaining = list(range(len(s)))
        total = 0.0
        for i in order:
            total += s[i] - math.log(sum(math.exp(s[j]) for j in remaining))
            remaining.remove(i)
        return total

    rng = np.random.default_rng(0)
    stored, grad = sample_admission(scores, 3 / 7, window=7, rng=rng)
    # the same draw again: Gumbel keys give the order
    keys = scores + np.random.default_rng(0).gumbel(size=7)
    order = [int(i) for i in np.argsort(-keys, kind="stable")[:3]]
    assert sorted(order) == np.flatnonzero(stored).tolist()
    numeric = np.array(
        [
            (log_prob(scores + 1e-6 * np.eye(7)[j], order) - log_prob(scores - 1e-6 * np.eye(7)[j], order)) / 2e-6
            for j in range(7)
        ]
    )
    assert grad == pytest.approx(numeric, abs=1e-6)


# ---- training, saving, the policy --------------------------------------------------------------------------


def test_reinforce_raises_the_recall_of_the_initial_policy(samples: list[dict[str, Any]]) -> None:
    episodes = prepare([conversation_from_sample(s) for s in samples[:4]])
    config = TrainConfig(budget=0.25, epochs=6, samples=8, window=20, lr=0.1, seed=0)
    model, report = reinforce(episodes, config)
    assert len(report.history) == 6
    # before: constant scores, so the gate stores the first turns it has room for
    assert report.initial == 0.5
    assert report.final >= report.initial + 0.2
    assert report.history[-1].reward >= report.history[0].reward + 0.2
    assert (model.budget, model.window) == (0.25, 20)
    # the facts carry numbers, dates, entities and first person; small talk does not
    weights = model.weights()
    assert weights["numbers"] > 0 and weights["chitchat"] < 0
    # and on conversations it never saw
    held_out = prepare([conversation_from_sample(s) for s in samples[4:]])
    assert evaluate(model.score, held_out, 0.25, window=20) >= 0.7


def test_a_saved_model_loads_back_exactly(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).random((50, len(FEATURES)))
    for hidden in (0, 4):
        model = AdmissionModel.initial(rows, hidden=hidden, seed=2)
        model.params = {k: v + np.random.default_rng(5).normal(size=v.shape) for k, v in model.params.items()}
        model.budget, model.window = 0.3, 60
        path = model.save(tmp_path / f"m{hidden}" / "admission.json")
        loaded = AdmissionModel.load(path)
        assert np.array_equal(loaded.score(rows), model.score(rows))
        assert (loaded.budget, loaded.window, loaded.hidden, loaded.name) == (0.3, 60, hidden, "trained")
    heuristic = AdmissionModel.load(AdmissionModel.heuristic().save(tmp_path / "h.json"))
    assert heuristic.name == "heuristic" and heuristic.budget is None
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="not a memos admission model"):
        AdmissionModel.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="no admission model at"):
        AdmissionModel.load(tmp_path / "missing.json")


def observations(sample: dict[str, Any]) -> list[Observation]:
    conv = conversation_from_sample(sample)
    return [
        Observation(t.text, index=i, speaker=t.speaker, metadata={"session_id": t.session, "external_id": t.turn_id})
        for i, t in enumerate(conv.turns)
    ]


def test_the_policy_stores_through_the_kernel_only_what_it_admits(mos: MemOS, samples: list[dict[str, Any]]) -> None:
    session = mos.as_user("alice")
    policy = AdmissionPolicy(AdmissionModel.heuristic(), budget=0.25, window=20)
    admitted = []
    for obs in observations(samples[0]):
        ops = policy.observe(session, ("alice", "chat"), obs)
        assert len(ops) <= 1
        results = apply_ops(session, "alice/chat", ops, policy=policy.name)
        assert all(r.ok for r in results)
        admitted += [op.text for op in ops]
    assert policy.gate is not None
    # at most a quarter of 40 turns: the first fact (turn 2) comes before the budget has room for one
    assert len(admitted) == policy.gate.num_stored == 9
    cubes = session.list("alice/chat")
    assert sorted(c.text for c in cubes) == sorted(admitted)
    # the heuristic picks the fact turns, not the small talk
    assert all("I bought a" in c.text for c in cubes)
    cube = cubes[0]
    assert cube.level.value == "short" and cube.header.labels == {"type": "episode"}
    assert cube.header.provenance.source.value == "policy"
    assert cube.header.provenance.speaker in ("Ann", "Ben")
    assert cube.header.provenance.external_id.startswith("D")

    policy.reset()
    assert policy.gate.num_seen == 0 and policy.last_score is None


def test_the_policy_uses_the_model_saved_in_the_home_and_its_budget(mos: MemOS, samples: list[dict[str, Any]]) -> None:
    saved = AdmissionModel.heuristic()
    saved.budget, saved.window = 0.5, 10
    saved.save(mos.home / HOME_MODEL)
    policy = AdmissionPolicy()
    session = mos.as_user("alice")
    kept = sum(len(policy.observe(session, ("alice",), obs)) for obs in observations(samples[1]))
    assert policy.model is not None and policy.model.budget == 0.5
    assert (policy.budget, kept) == (0.5, 19)  # at most half of 40 turns
    assert AdmissionPolicy(budget=0.1).budget == 0.1
    with pytest.raises(UserError):
        AdmissionPolicy(budget=0)


def test_without_a_saved_model_the_policy_falls_back_to_the_heuristic(mos: MemOS) -> None:
    policy = AdmissionPolicy()
    assert policy.observe(mos.as_user("alice"), ("alice",), Observation("   ")) == []
    policy.observe(mos.as_user("alice"), ("alice",), Observation("Ann: I moved to Oslo", speaker="Ann"))
    assert policy.model is not None and policy.model.name == "heuristic" and policy.budget == 0.25


def test_the_plugin_registers_the_policy_by_name() -> None:
    registered: list[tuple[str, Any]] = []
    plugin.memos_register_policies(lambda name, obj: registered.append((name, obj)))
    assert registered == [("admission", AdmissionPolicy)]
    assert isinstance(registered[0][1](), AdmissionPolicy)


# ---- the command -----------------------------------------------------------------------------------------


def test_memos_train_admission_trains_saves_and_reports(data_file: Path, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    result = cli("train", "admission", "--data", str(data_file), "--epochs", "2", "--samples", "4")
    lines = result.stdout.splitlines()
    assert lines[0] == "training on 6 conversations (240 turns), evaluating on 2; budget 25% of turns"
    assert lines[1].startswith("epoch 1/2: sampled recall ")
    assert lines[-3].startswith("train recall@10: trained ")
    assert lines[-2].startswith("eval recall@10: trained ")
    saved = tmp_path / "home" / HOME_MODEL
    assert lines[-1].startswith(f"saved the admission model to {saved} (")
    assert AdmissionModel.load(saved).budget == 0.25

    out = tmp_path / "elsewhere.json"
    cli("train", "admission", "--data", str(data_file), "--epochs", "1", "--budget", "0.5", "--out", str(out))
    assert AdmissionModel.load(out).budget == 0.5

    assert "at most 1" in cli.user_error("train", "admission", "--data", str(data_file), "--budget", "1.5")
    assert "no such file" in cli.user_error("train", "admission", "--data", str(tmp_path / "none.json"))
    few = tmp_path / "few.json"
    few.write_text(json.dumps(load_samples(data_file)[:3]))
    assert "evaluation needs at least one more" in cli.user_error("train", "admission", "--data", str(few))


def load_samples(path: Path) -> list[dict[str, Any]]:
    assert len(load_locomo(path)) == 8
    return json.loads(path.read_text())
