"""The evaluation estimators at their edges (vineppo/evaluate/metrics.py): messages of bad input,
the canonical vote keys (case, sign, zero, wrapped tasks), the answer read from several boxed
answers, which samples count as graded, and every summary fraction hand-computed."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from vineppo.evaluate.metrics import extracted_answer, majority_answer, pass_at_k, summarize, vote_key
from vineppo.tasks import get_task


@pytest.mark.parametrize("n, c, k, message", [
    (0, 0, 1, r"^pass_at_k: n must be >= 1, got 0$"),
    (4, 5, 1, r"^pass_at_k: c must be in \[0, n=4\], got 5$"),
    (4, -1, 1, r"^pass_at_k: c must be in \[0, n=4\], got -1$"),
    (4, 1, 0, r"^pass_at_k: k must be in \[1, n=4\], got 0$"),
    (4, 1, 5, r"^pass_at_k: k must be in \[1, n=4\], got 5$"),
])
def test_pass_at_k_messages(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_pass_at_k_at_the_edges_of_the_ranges():
    assert pass_at_k(1, 0, 1) == 0.0 and pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0  # c = 0: C(4,4)/C(4,4) = 1
    assert pass_at_k(4, 4, 1) == 1.0


def test_majority_answer_is_the_first_occurrence_of_the_winner():
    assert majority_answer([None, "b", "a", "b"]) == 1
    assert majority_answer(["a", None, "a"]) == 0
    assert majority_answer([None, None, "x"]) == 2


def test_gsm8k_vote_keys_by_value_and_lower_case():
    gsm8k = get_task("gsm8k")
    assert vote_key(gsm8k, "+18") == vote_key(gsm8k, "18.") == vote_key(gsm8k, "18.000") == "18"
    assert vote_key(gsm8k, "-0.0") == vote_key(gsm8k, "0") == "0"
    assert vote_key(gsm8k, ".5") == "0.5" and vote_key(gsm8k, "-2.50") == "-2.5"
    assert vote_key(gsm8k, "1e3") == "1e3"  # not a plain number: compared as text
    assert vote_key(gsm8k, "1200") == "1200"  # no exponent form from Decimal.normalize
    assert vote_key(gsm8k, "18 Apples") == "18 apples"
    assert vote_key(gsm8k, "a  b\n c") == "a b c"
    assert vote_key(gsm8k, "   ") is None


def test_vote_key_unwraps_tasks_to_their_grader():
    gsm8k, math = get_task("gsm8k"), get_task("math")
    wrapped = SimpleNamespace(inner=SimpleNamespace(inner=gsm8k))
    assert vote_key(wrapped, "1,000.0") == "1000"
    assert vote_key(SimpleNamespace(inner=math), "1,000.0") == "1,000.0"
    assert vote_key(math, "X") == "X"  # MATH answers keep their case


def test_extracted_answer_joins_several_answers():
    class Several:
        def extract_answers(self, response, row):
            return response.split("|") if response else []

    assert extracted_answer(Several(), "1|2", {}) == "1, 2"
    assert extracted_answer(Several(), "7", {}) == "7"
    assert extracted_answer(Several(), "", {}) is None
    gsm8k = get_task("gsm8k")
    assert extracted_answer(gsm8k, "so #### 42", {}) == gsm8k.extract_answer("so #### 42") == "42"


def test_extracted_answer_reads_with_the_question():
    class ByRow:  # a task whose answers depend on the row (e.g. a question's own answer format)
        def extract_answers(self, response, row):
            return [f"{row['unit']}{response}"]

    assert extracted_answer(ByRow(), "3", {"unit": "$"}) == "$3"


def _rec(p, j, ans, ok, finish="stop", truncated=False, tokens=10, **kw):
    return {"problem_index": p, "sample_index": j, "extracted_answer": ans, "correct": ok,
            "finish_reason": finish, "truncated": truncated, "tokens": tokens, **kw}


def test_summary_fractions_hand_computed():
    gsm8k = get_task("gsm8k")
    records = [_rec(0, 0, "5", True, tokens=4), _rec(0, 1, None, False, "length", True, tokens=8),
               _rec(0, 2, "6", False, tokens=3), _rec(1, 0, "1", True, tokens=1),
               _rec(1, 1, "2", False, truncated=True, tokens=2), _rec(1, 2, None, False, "length", tokens=6)]
    s = summarize(gsm8k, records, 3)
    # n = 3 samples per problem: pass@1, pass@2 and pass@3 (the sample count is always one of the k)
    assert sorted(k for k in s if k.startswith("pass@")) == ["pass@1", "pass@2", "pass@3"]
    assert s["pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert s["pass@2"] == pytest.approx(2 / 3)  # 1 − C(2,2)/C(3,2) for both problems
    assert s["pass@3"] == 1.0
    assert s["mean_response_tokens"] == 24 / 6
    assert s["num_problems"] == 2 and s["num_samples"] == 6 and s["num_correct"] == 2
    assert s["finished_frac"] == 4 / 6
    assert s["truncated_frac"] == 2 / 6
    assert s["no_answer_frac"] == 2 / 6
    # maj@3: problem 0: "5" and "6" one vote each, "5" first -> right; problem 1: "2" is truncated (not
    # graded, no vote) -> "1" wins -> right
    assert s["maj@3"] == 1.0


def test_summary_orders_samples_and_counts_only_graded_votes():
    gsm8k = get_task("gsm8k")
    records = [_rec(0, 3, "7", False), _rec(0, 2, "7", False), _rec(0, 1, "5", True), _rec(0, 0, "5", True)]
    # a tie 5/7: sample 0 ("5") comes first whatever the order of the records
    assert summarize(gsm8k, records, 4)["maj@4"] == 1.0
    random.Random(0).shuffle(records)
    assert summarize(gsm8k, records, 4)["maj@4"] == 1.0
    # "graded" wins over the finish reason: the 5s are not graded, so 7 wins
    records = [_rec(0, 0, "5", True, graded=False), _rec(0, 1, "5", True, graded=False),
               _rec(0, 2, "7", False, "length", graded=True)]
    assert summarize(gsm8k, records, 3)["maj@3"] == 0.0
    # a problem with fewer samples than asked: pass@k uses k = min(k, its samples)
    s = summarize(gsm8k, [_rec(0, 0, "1", False), _rec(0, 1, "2", True)], 4)
    assert s["pass@4"] == 1.0 and s["pass@1"] == 0.5


def test_summary_reports_pass_at_powers_of_two_and_at_n():
    gsm8k = get_task("gsm8k")
    records = [_rec(0, j, str(j), j == 99) for j in range(100)]
    s = summarize(gsm8k, records, 100)
    assert sorted((k for k in s if k.startswith("pass@")), key=lambda k: int(k[5:])) == [
        "pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "pass@32", "pass@64", "pass@100"]
    assert s["pass@1"] == pytest.approx(1 / 100) and s["pass@64"] == pytest.approx(64 / 100)
    assert s["pass@100"] == 1.0


@pytest.mark.parametrize("finish, truncated", [("length", False), ("stop", True)])
def test_summary_votes_of_records_without_graded_follow_the_old_rule(finish, truncated):
    # records written before `graded` existed: a sample counts only if it stopped and was not
    # truncated, so the "5" below casts no vote and "7" wins alone
    gsm8k = get_task("gsm8k")
    records = [_rec(0, 0, "5", True, finish, truncated), _rec(0, 1, "7", False)]
    assert summarize(gsm8k, records, 2)["maj@2"] == 0.0
    records[0] = _rec(0, 0, "5", True)  # graded: a 1-1 tie, the first sample's answer wins
    assert summarize(gsm8k, records, 2)["maj@2"] == 1.0


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="^summarize: no samples$"):
        summarize(get_task("gsm8k"), [], 4)
