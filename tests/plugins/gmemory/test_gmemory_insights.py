"""G-Memory's insights: the strict rule-operation parser and the score arithmetic, with exact values."""

from __future__ import annotations

from memos.plugins.gmemory.insights import (
    InsightStore,
    Rule,
    RuleOp,
    parse_numbered_rules,
    parse_rule_ops,
    rule_problem,
)

A = "Check the fridge first, because food is usually kept cold."
B = "Verify the goal state, because tasks fail on small mismatches."
C = "Avoid repeating an action, because repetition wastes steps."


def store_with(*scores: int) -> InsightStore:
    """Rules r1..rn with texts 'Rule i holds, because reason i.' and the given scores."""
    store = InsightStore()
    for i, score in enumerate(scores, 1):
        store.new_rule(f"Rule {i} holds, because reason {i}.", [f"t{i}"], score=score)
    return store


# ---- parsing ------------------------------------------------------------------------------


def test_parser_reads_the_four_operations() -> None:
    text = f"ADD: {A}\nAGREE 2: {B}\nEDIT 1: {C}\nREMOVE 3: {A}\n"
    parsed = parse_rule_ops(text)
    assert parsed.ops == [
        RuleOp("ADD", None, A),
        RuleOp("AGREE", 2, B),
        RuleOp("EDIT", 1, C),
        RuleOp("REMOVE", 3, A),
    ]
    assert parsed.rejected == []


def test_parser_accepts_bullets_and_ignores_blank_lines() -> None:
    parsed = parse_rule_ops(f"\n- ADD: {A}\n\n  * AGREE 1: {B}  \n")
    assert parsed.ops == [RuleOp("ADD", None, A), RuleOp("AGREE", 1, B)]
    assert parsed.rejected == []


def test_parser_rejects_and_counts_malformed_lines() -> None:
    text = "\n".join(
        [
            "Here are my operations:",  # not an operation
            "ADD 2: " + A,  # ADD with a number
            "AGREE: " + A,  # AGREE without a number
            "EDIT 0: " + A,  # numbers start at 1
            "add: " + A,  # lower case is not an operation
            "ADD:" + A,  # no space after the colon
        ]
    )
    parsed = parse_rule_ops(text)
    assert parsed.ops == []
    assert [why for _, why in parsed.rejected] == [
        "not an operation (ADD, AGREE n, EDIT n or REMOVE n)",
        'ADD takes no rule number: write "ADD: X, because Y."',
        'AGREE needs a rule number: "AGREE 2: X, because Y."',
        "rule numbers start at 1",
        "not an operation (ADD, AGREE n, EDIT n or REMOVE n)",
        'malformed ADD: write "ADD: X, because Y."',
    ]


def test_parser_checks_the_rule_form() -> None:
    lines = [
        "ADD: Check the fridge first, because food is cold",  # no final period
        "ADD: Check the fridge first.",  # no because
        "ADD: , because nothing.",  # no X
    ]
    parsed = parse_rule_ops("\n".join(lines))
    assert parsed.ops == []
    assert [why for _, why in parsed.rejected] == [
        "a rule must end with a period",
        'a rule must read "X, because Y."',
        'a rule must read "X, because Y."',
    ]
    more = [
        "ADD: Check it, because .",  # no Y
        "ADD: Check it, because ADD: more, because more.",  # two operations on one line
        "ADD: ",  # empty
        "AGREE 2:",  # empty
    ]
    parsed = parse_rule_ops("\n".join(more))
    assert parsed.ops == []
    assert [why for _, why in parsed.rejected] == [
        'a rule must read "X, because Y."',
        "the rule text holds another operation",
        "the rule is empty",
        "the rule is empty",
    ]


def test_parser_keeps_at_most_four_operation_lines() -> None:
    lines = [f"ADD: Rule {i} holds, because reason {i}." for i in range(1, 7)]
    parsed = parse_rule_ops("\n".join(["Operations:", "ADD: bad", *lines]))
    # the chatty first line does not use a slot; the malformed ADD does
    assert [op.text for op in parsed.ops] == [f"Rule {i} holds, because reason {i}." for i in (1, 2, 3)]
    assert [why for _, why in parsed.rejected] == [
        "not an operation (ADD, AGREE n, EDIT n or REMOVE n)",
        "a rule must end with a period",
        "more than 4 operations",
        "more than 4 operations",
        "more than 4 operations",
    ]


def test_parser_never_raises_on_junk() -> None:
    for junk in ["", "   ", "\x00\x01", "REMOVE", "EDIT 99999999999999999999: x, because y.", None]:
        parsed = parse_rule_ops(junk)  # type: ignore[arg-type]
        assert isinstance(parsed.ops, list)
    assert parse_rule_ops("EDIT 99999999999999999999: x, because y.").ops == [
        RuleOp("EDIT", 99999999999999999999, "x, because y.")
    ]


def test_rule_problem_and_numbered_rules() -> None:
    assert rule_problem(A) is None
    rules, rejected = parse_numbered_rules(f"1. {A}\n2. {B}\nSure!\n3. not a rule")
    assert rules == [A, B]
    assert rejected == [("Sure!", "not a numbered list item"), ("3. not a rule", "a rule must end with a period")]


# ---- score arithmetic ---------------------------------------------------------------------


def test_add_creates_rules_at_score_two_deduplicated() -> None:
    store = store_with(3)
    report = store.apply(
        [
            RuleOp("ADD", None, A),
            RuleOp("ADD", None, "rule 1 HOLDS,  because reason 1"),  # same as r1 once normalised
            RuleOp("ADD", None, A.upper().replace("BECAUSE", "because")),  # same as the first ADD
        ],
        shown=[],
        tasks=["t7", "t8"],
    )
    assert report.applied == [(f"ADD: {A}", "r2")]
    assert [why for _, why in report.rejected] == ["duplicate of r1", "duplicate of an earlier ADD"]
    assert store.get("r2") == Rule("r2", A, 2, ["t7", "t8"], [])
    assert len(store) == 2


def test_agree_and_edit_add_one_and_join_the_positive_set() -> None:
    store = store_with(2, 2)
    report = store.apply(
        [RuleOp("AGREE", 1, "Rule 1 holds, because reason 1."), RuleOp("EDIT", 2, C)],
        shown=["r1", "r2"],
        tasks=["t1", "t9"],
    )
    assert [rid for _, rid in report.applied] == ["r1", "r2"]
    assert store.get("r1") == Rule("r1", "Rule 1 holds, because reason 1.", 3, ["t1", "t9"], [])
    assert store.get("r2") == Rule("r2", C, 3, ["t2", "t1", "t9"], [])


def test_numbers_refer_to_the_shown_rules() -> None:
    store = store_with(2, 2, 2)
    # rule 1 of the list shown is r3, rule 2 is r1
    store.apply([RuleOp("AGREE", 1, C), RuleOp("REMOVE", 2, C)], shown=["r3", "r1"], tasks=["t5"])
    assert [(r.id, r.score) for r in store.rules] == [("r1", 1), ("r2", 2), ("r3", 3)]
    assert store.get("r1").negative_tasks == ["t5"]


def test_remove_takes_one_below_ten_rules_and_deletes_at_zero() -> None:
    store = store_with(2, 1, 5)
    report = store.apply([RuleOp("REMOVE", 1, A), RuleOp("REMOVE", 2, A)], shown=["r1", "r2"], tasks=["t4"])
    assert report.deleted == ["r2"]
    assert [(r.id, r.score) for r in store.rules] == [("r1", 1), ("r3", 5)]


def test_remove_takes_three_from_ten_rules_on() -> None:
    store = store_with(*([4] * 10))
    report = store.apply([RuleOp("REMOVE", 1, A), RuleOp("REMOVE", 2, A)], shown=["r1", "r3"], tasks=["t1"])
    assert [(r.id, r.score) for r in store.rules[:3]] == [("r1", 1), ("r2", 4), ("r3", 1)]
    assert report.deleted == []
    # nine rules: back to 1
    store9 = store_with(*([3] * 9))
    store9.apply([RuleOp("REMOVE", 1, A)], shown=["r1"], tasks=["t1"])
    assert store9.get("r1").score == 2
    # exactly 10 with a rule at 3: -3 deletes it
    store10 = store_with(*([3] * 10))
    report = store10.apply([RuleOp("REMOVE", 1, A)], shown=["r1"], tasks=["t1"])
    assert report.deleted == ["r1"]
    assert len(store10) == 9


def test_full_is_counted_before_adds_take_effect() -> None:
    store = store_with(*([3] * 9))
    # ADD applies after REMOVE, so the store holds 9 rules when REMOVE weighs: -1
    store.apply([RuleOp("ADD", None, A), RuleOp("REMOVE", 1, B)], shown=["r1"], tasks=["t1"])
    assert store.get("r1").score == 2
    assert len(store) == 10


def test_operations_apply_remove_agree_edit_add_in_that_order() -> None:
    store = store_with(1, 2)
    # EDIT 1 would give r1 a new text, but REMOVE 1 comes first... and a rule gets one operation only
    report = store.apply(
        [RuleOp("ADD", None, A), RuleOp("EDIT", 2, B), RuleOp("REMOVE", 1, C), RuleOp("EDIT", 1, C)],
        shown=["r1", "r2"],
        tasks=["t3"],
    )
    assert [op for op, _ in report.applied] == [f"REMOVE 1: {C}", f"EDIT 2: {B}", f"ADD: {A}"]
    assert report.rejected == [(f"EDIT 1: {C}", "rule r1 already has an operation")]
    assert report.deleted == ["r1"]
    assert [(r.id, r.rule, r.score) for r in store.rules] == [("r2", B, 3), ("r3", A, 2)]


def test_edit_to_an_existing_rule_becomes_agree_and_bad_numbers_are_rejected() -> None:
    store = store_with(2, 2)
    report = store.apply(
        [RuleOp("EDIT", 1, "Rule 2 holds, because reason 2."), RuleOp("AGREE", 3, A), RuleOp("REMOVE", 1, A)],
        shown=["r1", "r2"],
        tasks=["t6"],
    )
    # the EDIT of rule 1 says what r2 says: r2 is agreed with, r1 unchanged (then removed)
    assert report.applied == [("REMOVE 1: " + A, "r1"), ("EDIT 1: Rule 2 holds, because reason 2.", "r2")]
    assert report.rejected == [(f"AGREE 3: {A}", "rule 3 was not shown (1..2)")]
    assert [(r.id, r.rule, r.score) for r in store.rules] == [
        ("r1", "Rule 1 holds, because reason 1.", 1),
        ("r2", "Rule 2 holds, because reason 2.", 3),
    ]


def test_operations_on_deleted_rules_are_rejected() -> None:
    store = store_with(1, 2)
    store.apply([RuleOp("REMOVE", 1, A)], shown=["r1", "r2"], tasks=["t1"])
    report = store.apply([RuleOp("AGREE", 1, A)], shown=["r1", "r2"], tasks=["t1"])
    assert report.rejected == [(f"AGREE 1: {A}", "rule 1 no longer exists")]


def test_credit_after_success_and_failure() -> None:
    store = store_with(1, 2, 3)
    assert store.credit(["r1", "r3", "r9"], success=True) == (["r1", "r3"], [])
    assert [r.score for r in store.rules] == [2, 2, 4]
    assert store.credit(["r1", "r2", "r1"], success=False) == (["r1", "r2"], ["r1", "r2"])
    assert [(r.id, r.score) for r in store.rules] == [("r3", 4)]
    assert store.credit(["r3"], success=False) == (["r3"], [])
    assert store.get("r3").score == 2


def test_votes_and_support() -> None:
    store = InsightStore()
    store.new_rule(A, ["t1", "t2"], score=2)  # r1
    store.new_rule(B, ["t3"], score=5)  # r2
    store.new_rule(C, ["t2", "t3"], score=1)  # r3
    store.new_rule("Other, because other.", ["t9"])  # r4
    assert [(r.id, n) for r, n in store.votes(["t1", "t2", "t3"])] == [("r1", 2), ("r3", 2), ("r2", 1)]
    assert [(r.id, n) for r, n in store.votes(["t3"])] == [("r2", 1), ("r3", 1)]
    assert [r.id for r in store.supported(["t1", "t2", "t3", "t4"])] == ["r1", "r3"]
    assert [r.id for r in store.supported(["t2", "t3", "t5"])] == ["r3"]


def test_ids_are_never_reused_and_round_trip() -> None:
    store = store_with(1, 2)
    store.credit(["r2"], success=False)
    store.new_rule(A, ["t1"])
    assert [r.id for r in store.rules] == ["r1", "r3"]
    again = InsightStore.from_dict(store.to_dict())
    assert again == store
    assert again.new_rule(B, []).id == "r4"
