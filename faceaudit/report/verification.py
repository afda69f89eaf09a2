"""A verification result as text and as a table: the console summary, and every number one CSV row
(section, fold, FAR target, quantity, value, interval) so that nothing in the JSON is left out."""
from __future__ import annotations

CSV_COLUMNS = ("dataset", "rule", "section", "fold", "far_target", "quantity", "value", "ci_lower", "ci_upper",
               "interval")
RATES = ("accuracy", "precision", "recall", "far", "frr")


def _interval_name(level: float) -> str:
    return f"Clopper-Pearson {level * 100:g}%"


def _rate_rows(section: str, fold, entry: dict, level: float) -> list[list]:
    """Rows of a scores-with-intervals dict (:func:`faceaudit.evaluate.verification.with_intervals`)."""
    rows = [[section, fold, "", "threshold", entry["threshold"], "", "", ""]] if "threshold" in entry else []
    for key in RATES:
        rate = entry[key]
        rows.append([section, fold, "", key, rate["value"], rate["ci"][0], rate["ci"][1], _interval_name(level)])
    rows.append([section, fold, "", "f1", entry["f1"], "", "", ""])
    rows += [[section, fold, "", key, entry[key], "", "", ""] for key in ("tp", "fp", "fn", "tn")]
    return rows


def csv_rows(result: dict) -> list[list]:
    """Every number of a verification result, one a row, in :data:`CSV_COLUMNS` order."""
    level = result["level"]
    rows: list[list] = []
    for criterion in ("accuracy", "f1"):
        section = f"{criterion}_kfold"
        block = result[criterion]
        for row in block["folds"]:
            rows += [[section, row["fold"], "", key, value, "", "", ""] for key, value in row.items() if key != "fold"]
        for stat in ("mean", "std"):
            rows += [[section, stat, "", key, value, "", "", ""] for key, value in block[stat].items()]
        rows += _rate_rows(section, "pooled", block["pooled"], level)
    for name, entry in result["all_pairs"].items():
        rows += _rate_rows(f"all_pairs_{name}", "", entry, level)
    for point in result["tar_at_far"]:
        target = point["far_target"]
        if not point["reachable"]:
            rows.append(["tar_at_far", "", target, "tar", "", "", "", f"out of reach: {point['reason']}"])
            continue
        rows.append(["tar_at_far", "", target, "threshold", point["threshold"], "", "", ""])
        rows.append(["tar_at_far", "", target, "tar", point["tar"], *point["tar_ci"], _interval_name(level)])
        rows.append(["tar_at_far", "", target, "far", point["far"], *point["far_ci"], _interval_name(level)])
    ci = result.get("ci") or {}
    boot = f"bootstrap {ci['level'] * 100:g}% ({ci['n_boot']} resamples, seed {ci['seed']})" if ci else ""
    eer = result["eer"]
    rows.append(["eer", "", "", "eer", eer["value"], *(ci.get("eer") or ("", "")), boot])
    rows.append(["eer", "", "", "threshold", eer["threshold"], *(ci.get("eer_th") or ("", "")), boot])
    for key in ("far", "frr"):
        rows.append(["eer", "", "", key, eer[key]["value"], *eer[key]["ci"], _interval_name(level)])
    for key, value in result["metrics"].items():
        rows.append(["pyeer_metrics", "", "", key, value, *(ci.get(key) or ("", "")), boot if key in ci else ""])
    rows.append(["roc_auc", "", "", "roc_auc", result["roc_auc"], "", "", ""])
    if "fixed_threshold" in result:
        rows += _rate_rows("fixed_threshold", "", result["fixed_threshold"], level)
    return [[result["dataset"], result["rule"], *row] for row in rows]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _ci(interval) -> str:
    return f"[{_pct(interval[0])}, {_pct(interval[1])}]"


def report_lines(result: dict) -> list[str]:
    """The console summary of a verification result."""
    protocol, acc, f1 = result["protocol"], result["accuracy"], result["f1"]
    level = f"{result['level'] * 100:g}%"
    where = (f"sampled, {protocol['fold_split']} folds, seed {protocol['seed']}" if protocol["kind"] == "sample"
             else f"{protocol['file']} ({protocol['kind']}), folds {protocol['fold_split']}")
    thresholds = [row["threshold"] for row in acc["folds"]]
    lines = [f"Dataset: {result['dataset']} ({result['n_embeddings']:,} embeddings; model: {result['model'] or 'not recorded'})",
             f"Pairs: {result['n_mated']:,} mated + {result['n_non_mated']:,} non-mated in {result['n_folds']} folds; {where}",
             f"{result['n_folds']}-fold accuracy: {_pct(acc['mean']['accuracy'])} ± {_pct(acc['std']['accuracy'])} "
             f"(each fold's threshold chosen on the other folds: {min(thresholds):.4f} .. {max(thresholds):.4f}); "
             f"pooled {_pct(acc['pooled']['accuracy']['value'])} {_ci(acc['pooled']['accuracy']['ci'])} ({level} CP)",
             f"F1-maximising threshold (chosen on the other folds): F1 {f1['mean']['f1']:.4f} ± {f1['std']['f1']:.4f}, "
             f"precision {f1['mean']['precision']:.4f}, recall {f1['mean']['recall']:.4f} on the held-out folds",
             f"TAR@FAR (rule: {result['rule']}; {level} Clopper-Pearson intervals):"]
    for point in result["tar_at_far"]:
        if point["reachable"]:
            lines.append(f"  FAR {point['far_target']:g}: TAR {_pct(point['tar'])} {_ci(point['tar_ci'])} at threshold "
                         f"{point['threshold']:.4f} (FAR there {point['far']:.3g}, {point['false_matches']:,} false matches)")
        else:
            lines.append(f"  FAR {point['far_target']:g}: out of reach ({point['reason']})")
    eer, ci = result["eer"], result.get("ci")
    lines.append(f"EER {_pct(eer['value'])}" + (f" {_ci(ci['eer'])} (bootstrap)" if ci else "")
                 + f" at threshold {eer['threshold']:.4f}; ROC AUC {result['roc_auc']:.6f}")
    if "fixed_threshold" in result:
        fixed = result["fixed_threshold"]
        lines.append(f"At threshold {fixed['threshold']:.4f}: accuracy {_pct(fixed['accuracy']['value'])}, "
                     f"FAR {_pct(fixed['far']['value'])} {_ci(fixed['far']['ci'])}, "
                     f"FRR {_pct(fixed['frr']['value'])} {_ci(fixed['frr']['ci'])}")
    lines.append(f"Decision threshold: {result['fixed_threshold_source']}")
    return lines
