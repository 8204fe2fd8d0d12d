"""SARIF 2.1.0 for code-scanning dashboards (``batch --sarif``): one result per finding.

Rule ids are stable (documented in the README; never renumbered):

- ``KA001`` backdoor-target: trigger recovery found a label every input can be pushed to
  (one result per target label);
- ``KA002`` all-to-all-backdoor: one small trigger moves inputs off their own class;
- ``KA003`` known-trigger-works: the given trigger's attack success rate exceeds --max-asr;
- ``KA004`` unsafe-model-refused: the loader refused the file (code, resource bombs, …);
- ``KA005`` unreadable-model: the model or data could not be used (exit 2);
- ``KA006`` audit-failed: the audit crashed or timed out, twice.

Locations are the model files (relative URIs when under the working directory); each result
carries the model's sha256 as a partial fingerprint, so dashboards follow a file across renames.
"""

from __future__ import annotations

from typing import Any

from kerasaudit import __version__
from kerasaudit.fleet import FleetResult, Outcome, relative_uri

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"

RULES: tuple[tuple[str, str, str, str], ...] = (
    ("KA001", "backdoor-target", "error",
     "Trigger recovery found a backdoor target label: a small trigger sends inputs of every "
     "other class to it."),
    ("KA002", "all-to-all-backdoor", "error",
     "One small trigger moves inputs off their own class (an all-to-all backdoor)."),
    ("KA003", "known-trigger-works", "error",
     "The given trigger's attack success rate exceeds --max-asr."),
    ("KA004", "unsafe-model-refused", "error",
     "The model file was refused before loading: it carries code or a resource bomb, or "
     "uses classes outside the allowlist."),
    ("KA005", "unreadable-model", "warning",
     "The model or the data could not be used (malformed, truncated, wrong shape)."),
    ("KA006", "audit-failed", "warning",
     "The audit crashed or timed out twice; the model was not judged."),
)  # fmt: skip
_INDEX = {rule_id: i for i, (rule_id, *_rest) in enumerate(RULES)}


def _result(rule_id: str, text: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "ruleId": rule_id,
        "ruleIndex": _INDEX[rule_id],
        "level": RULES[_INDEX[rule_id]][2],
        "message": {"text": text},
        "locations": [
            {"physicalLocation": {"artifactLocation": {"uri": relative_uri(outcome.model)}}}
        ],
        "partialFingerprints": {"modelSha256/v1": outcome.model_sha256},
    }


def _results(outcome: Outcome) -> list[dict[str, Any]]:
    report = outcome.report or {}
    if outcome.status == "refused":
        return [_result("KA004", outcome.message or "model refused as unsafe", outcome)]
    if outcome.status == "bad input":
        return [_result("KA005", outcome.message or "model or data unusable", outcome)]
    if outcome.status == "error":
        return [_result("KA006", outcome.message or "audit failed", outcome)]
    if outcome.status != "found":
        return []
    findings = "; ".join(report.get("findings", []))
    out = []
    if report.get("reverse") is None:  # a known trigger
        return [_result("KA003", findings or "the known trigger works", outcome)]
    for label in outcome.targets:
        out.append(_result("KA001", f"backdoor target label {label}: {findings}", outcome))
    if outcome.all_to_all:
        out.append(_result("KA002", findings or "all-to-all backdoor", outcome))
    return out


def to_sarif(result: FleetResult) -> dict[str, Any]:
    rules = [
        {
            "id": rule_id,
            "name": name,
            "shortDescription": {"text": text.split(":")[0].split(".")[0]},
            "fullDescription": {"text": text},
            "defaultConfiguration": {"level": level},
        }
        for rule_id, name, level, text in RULES
    ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kerasaudit",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": [r for o in result.outcomes for r in _results(o)],
            }
        ],
    }
