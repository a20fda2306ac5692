"""A registered model version's description: how it did, and what it was built from."""
from __future__ import annotations


def model_card(evaluation: dict, sources: dict[str, str]) -> str:
    """Markdown: the test exact match overall and per task (``eval.json``), then one row per source
    (data, KG and config hashes, code version, parent run)."""
    test = evaluation["test"]
    baseline = test.get("majority_baseline")
    lines = [f"Test exact match **{test['accuracy']:.4f}** on {test['n']:,} questions "
             f"(mean error {test['mean_error']:.4f}, {test['failed_tasks']} task(s) with error > 5%)"
             + (f"; the majority-answer baseline (the training split's most frequent answer to each type of "
                f"question) scores {baseline:.4f}." if baseline is not None else "."), "",
             "| task | exact match |", "|---|---|"]
    lines += [f"| {task} | {acc:.4f} |" for task, acc in sorted(test["per_task"].items())]
    types = test.get("per_question_type", {})
    if 1 < len(types) <= 30:  # more than that is a table no one reads: eval.json has it
        lines += ["", "| question type | exact match | questions |", "|---|---|---|"]
        lines += [f"| {t} | {v['accuracy']:.4f} | {v['n']} |" for t, v in types.items()]
    lines += ["", "| built from | |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in sources.items()]
    return "\n".join(lines) + "\n"
