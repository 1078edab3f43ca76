"""LLMBar: loading the shared copy and upstream's layout, the strict-inequality metric, and a run with a fake judge."""

import json
from collections import Counter

import pytest

from spar_jax.eval import llmbar
from spar_jax.judge.settings import JudgeConfig
from spar_jax.judge.votes import Judgement

from eval_fakes import write_json
from spar_fakes import TEMPLATES, ScriptedEngine, vote_text


def test_loads_the_shared_copy_with_the_documented_counts(shared_data):
    pairs = llmbar.load_llmbar(str(shared_data / "llmbar"))
    assert len(pairs) == 419
    counts = Counter(p.subset for p in pairs)
    assert counts == {"Natural": 100, "Neighbor": 134, "GPTInst": 92, "GPTOut": 47, "Manual": 46}
    labels = Counter((p.subset, p.label) for p in pairs)
    assert (labels["Natural", 1], labels["Natural", 2], labels["Neighbor", 1], labels["Manual", 2]) == (42, 58, 75, 24)
    assert all(p.instruction and all(isinstance(o, str) for o in p.outputs) for p in pairs)
    first = llmbar.load_llmbar(str(shared_data / "llmbar"), ["GPTOut"], limit=3)
    assert [(p.subset, p.index) for p in first] == [("GPTOut", 0), ("GPTOut", 1), ("GPTOut", 2)]


def _record(i, label=1):
    return {
        "input": f"instruction {i}",
        "output_1": f"good {i}" if label == 1 else f"bad {i}",
        "output_2": f"bad {i}" if label == 1 else f"good {i}",
        "label": label,
    }


def test_reads_upstream_layout_and_rejects_bad_records(tmp_path):
    write_json(tmp_path / "up" / "Natural" / "dataset.json", [_record(0)])
    write_json(tmp_path / "up" / "Adversarial" / "Manual" / "dataset.json", [_record(1, 2)])
    pairs = llmbar.load_llmbar(str(tmp_path / "up"), ["Natural", "Manual"])
    assert [(p.subset, p.label, p.outputs[0]) for p in pairs] == [("Natural", 1, "good 0"), ("Manual", 2, "bad 1")]
    bad = write_json(tmp_path / "bad" / "Natural.json", [_record(0), {**_record(1), "label": 3}])
    with pytest.raises(ValueError, match=r"Natural.json: record 1: key 'label' must be 1 or 2, got 3"):
        llmbar.load_llmbar(str(bad.parent), ["Natural"])
    with pytest.raises(ValueError, match="file not found"):
        llmbar.load_llmbar(str(tmp_path / "bad"), ["GPTInst"])
    with pytest.raises(RuntimeError, match="could not download LLMBar subset Natural from http://127.0.0.1:9/"):
        llmbar.load_llmbar("http://127.0.0.1:9/LLMBar", ["Natural"])
    with pytest.raises(ValueError, match="unknown or empty"):
        llmbar.LLMBarConfig(subsets=("Natural", "Hard"))
    assert llmbar.subset_location(llmbar.DEFAULT_SOURCE, "GPTOut").endswith(
        "/Dataset/LLMBar/Adversarial/GPTOut/dataset.json"
    )


def test_metric_is_a_strict_inequality_and_averages_adversarial_subsets():
    rows = [
        ("Natural", 0.8, 0.2),
        ("Natural", 0.4, 0.4),  # right, tie (wrong)
        ("Neighbor", 0.0, 0.0),
        ("Neighbor", 0.6, 0.2),
        ("Neighbor", 0.2, 1.0),  # tie, right, wrong
        ("GPTInst", 1.0, 0.8),
    ]  # right
    stats = llmbar.llmbar_metrics(rows)
    m = stats["metrics"]
    assert m["natural"] == 0.5 and m["neighbor"] == pytest.approx(1 / 3) and m["gptinst"] == 1.0
    assert "manual" not in m
    assert m["adversarial_avg"] == pytest.approx((1 / 3 + 1) / 2)  # mean of subsets, not of pairs
    assert m["overall"] == pytest.approx(3 / 6)
    assert m["overall_macro"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    assert stats["per_subset"]["Neighbor"] == {"pairs": 3, "correct": 1, "ties": 1}
    assert list(stats["per_subset"]) == ["Natural", "GPTInst", "Neighbor"]
    assert llmbar.yes_fraction(Judgement(("a", "b"), (None, None))) == 0.0
    assert llmbar.yes_fraction(Judgement(("a", "b", "c"), ("yes", None, "no"))) == 0.5


def test_run_judges_both_outputs_and_scores_pairs(tmp_path):
    data = tmp_path / "llmbar"
    write_json(data / "Natural.json", [_record(0), _record(1, 2), _record(2)])
    write_json(data / "GPTOut.json", [_record(3, 2)])
    votes = {
        "good 0": "yyynn",
        "bad 0": "ynnnn",  # 0.6 > 0.2: right
        "good 1": "yynnx",
        "bad 1": "yynnn",  # 0.5 > 0.4: right (invalid votes are not counted)
        "good 2": "xxxxx",
        "bad 2": "nnnnn",  # 0 vs 0: tie, wrong
        "good 3": "nnnnn",
        "bad 3": "ynnnn",
    }  # 0 < 0.2: wrong
    engine = ScriptedEngine(judge=lambda i, r, n: [vote_text(c) for c in votes[r]])
    templates = write_json(tmp_path / "t.json", TEMPLATES.to_dict())
    settings = llmbar.LLMBarConfig(
        source=str(data),
        subsets=("Natural", "GPTOut"),
        judge=JudgeConfig(templates_file=str(templates)),
        label="judge A",
    )
    summary = llmbar.run(engine, settings, tmp_path / "out")
    (call,) = engine.calls
    assert call.kind == "judge" and call.n == 5 and call.sampling["temperature"] == 0.7
    assert ScriptedEngine.judged(call) == ["good 0", "bad 0", "bad 1", "good 1", "good 2", "bad 2", "bad 3", "good 3"]
    m = summary["metrics"]
    assert m["natural"] == pytest.approx(2 / 3) and m["gptout"] == 0.0 and m["overall"] == 0.5
    assert m["adversarial_avg"] == 0.0 and summary["pair_ties"] == 1 and summary["invalid_votes"] == 6
    records = [json.loads(s) for s in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True, False, False]
    assert records[1]["values"] == [0.4, 0.5] and records[1]["label"] == 2
    report = (tmp_path / "out" / "report.md").read_text()
    assert "judge A" in report and "| Natural | 3 | 1 | 66.67 |" in report
    assert "| Overall (all pairs) | 4 | 1 | 50.00 |" in report
    # Pointwise: good 0 Yes / bad 0 No; good 1 tie and good 2 no valid vote count as No; GPTOut both No.
    assert summary["confusion"] == {
        "Natural": {"tp": 1, "fp": 0, "fn": 2, "tn": 3},
        "GPTOut": {"tp": 0, "fp": 0, "fn": 1, "tn": 1},
    }
    assert m["pointwise_acc_natural"] == pytest.approx(4 / 6) and m["pointwise_f1_natural"] == pytest.approx(0.5)
    assert m["pointwise_acc_gptout"] == 0.5 and m["pointwise_f1_gptout"] == 0.0
    assert m["pointwise_acc_overall"] == pytest.approx((4 / 6 + 0.5) / 2)
    assert "| Natural | 6 | 1 | 0 | 2 | 3 | 66.67 | 50.00 |" in report
    assert "| Average (mean of subsets) |  |  |  |  |  | 58.33 | 25.00 |" in report


def test_pointwise_accuracy_and_f1_by_hand():
    T, F = True, False
    rows = [
        ("Natural", T, F),
        ("Natural", T, T),
        ("Natural", T, T),
        ("Natural", F, F),  # TP 3, FP 2, FN 1, TN 2
        ("GPTInst", F, F),
        ("GPTInst", F, F),  # TP 0, FP 0, FN 2, TN 2
        ("Manual", T, F),
    ]  # TP 1, TN 1
    out = llmbar.pointwise_metrics(rows)
    m = out["metrics"]
    assert out["confusion"]["Natural"] == {"tp": 3, "fp": 2, "fn": 1, "tn": 2}
    assert m["pointwise_acc_natural"] == 5 / 8
    # precision 3/5, recall 3/4: F1 = 2 * 0.6 * 0.75 / 1.35 = 2/3 = 2TP / (2TP + FP + FN) = 6/9
    assert m["pointwise_f1_natural"] == pytest.approx(2 / 3)
    assert (m["pointwise_acc_gptinst"], m["pointwise_f1_gptinst"]) == (0.5, 0.0)
    assert (m["pointwise_acc_manual"], m["pointwise_f1_manual"]) == (1.0, 1.0)
    assert m["pointwise_acc_adversarial_avg"] == pytest.approx(0.75)  # mean of GPTInst and Manual
    assert m["pointwise_f1_adversarial_avg"] == pytest.approx(0.5)
    assert m["pointwise_acc_overall"] == pytest.approx((5 / 8 + 0.5 + 1.0) / 3)  # mean of subsets, as the paper
    assert m["pointwise_f1_overall"] == pytest.approx((2 / 3 + 0.0 + 1.0) / 3)
    assert "pointwise_acc_gptout" not in m and list(out["confusion"]) == ["Natural", "GPTInst", "Manual"]
    assert llmbar.f1_score(0, 0, 0) is None
