"""``faceaudit demo``: the whole pipeline on real faces with a real model.

The story: a "synthetic" set (the first 3/4 of the people, first half of their
images) is checked for identity leakage against a "reference" set (the last
half of the people, other images). People in both are leaked identities; the
leakage report must flag exactly them. With ORL's 40 people: synthetic = s1-s30
images 1-5, reference = s21-s40 images 6-10, leaked = s21-s30.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.io.sources import is_image_name

SHARED_ORL = Path("..") / "shared" / "data" / "orl"  # beside the checkout, as in CI
#: InsightFace's ArcFace MobileFaceNet on SCRFD-aligned faces, both from one pinned wheel: on ORL's
#: 400 faces SCRFD alignment gives this model an EER of 0.004%, YuNet's 0.008% (README, "Architectures")
ARCH, ALIGN = "arcface-mbf", "scrfd"


def _natural(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_demo_data(data: str | os.PathLike | None, work: Path, log: Callable[[str], None]) -> Path:
    """``data`` or $DEMO_DATA, else ../shared/data/orl, else scikit-learn's Olivetti faces."""
    chosen = data or os.environ.get("DEMO_DATA")
    if chosen:
        path = Path(chosen)
        if not path.is_dir():
            raise FaceauditError(f"{path}: demo data folder not found (DEMO_DATA must be a folder of identity sub-folders)")
        return path
    if SHARED_ORL.is_dir():
        return SHARED_ORL
    return _olivetti_folder(work / "olivetti", log)


def _olivetti_folder(target: Path, log: Callable[[str], None]) -> Path:
    """Write scikit-learn's Olivetti faces (the 400 ORL faces, 64x64) as s1..s40/1..10.png."""
    from PIL import Image
    from sklearn.datasets import fetch_olivetti_faces

    if len(list(target.glob("s*/*.png"))) == 400:
        return target
    log("downloading the Olivetti faces with scikit-learn (cached after the first time)")
    try:
        faces = fetch_olivetti_faces()
    except Exception as exc:  # network errors come in many types
        raise FaceauditError(f"could not fetch the Olivetti faces ({exc}); set DEMO_DATA to a folder of faces") from None
    counts: dict[int, int] = {}
    for image, person in zip(faces.images, faces.target):
        counts[person] = counts.get(person, 0) + 1
        path = target / f"s{person + 1}" / f"{counts[person]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).round().astype(np.uint8)).save(path)
    return target


def split_story(data: Path, work: Path) -> dict:
    """Copy the synthetic and reference subsets into ``work`` and say who is leaked."""
    people = sorted((p for p in data.iterdir() if p.is_dir()), key=lambda p: _natural(p.name))
    if len(people) < 4:
        raise FaceauditError(f"{data}: the demo needs at least 4 identity sub-folders, found {len(people)}")
    n = len(people)
    synthetic_people, reference_people = people[: 3 * n // 4], people[n // 2:]
    leaked = sorted({p.name for p in synthetic_people} & {p.name for p in reference_people}, key=_natural)
    sets = {"synthetic": (synthetic_people, 0), "reference": (reference_people, 1)}
    for name, (members, half) in sets.items():
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        for person in members:
            images = sorted((f for f in person.iterdir() if is_image_name(f.name)), key=lambda f: _natural(f.name))
            chosen = images[: len(images) // 2] if half == 0 else images[len(images) // 2:]
            (folder / person.name).mkdir(parents=True)
            for image in chosen:
                shutil.copyfile(image, folder / person.name / image.name)
    return {"synthetic": work / "synthetic", "reference": work / "reference", "leaked": leaked,
            "synthetic_people": [p.name for p in synthetic_people],
            "reference_people": [p.name for p in reference_people]}


def search_threshold(impostor_mean: float, impostor_std: float, n_reference: int, fmr: float = 1e-3) -> float:
    """The score a non-mated search of ``n_reference`` faces exceeds with probability ``fmr``.

    A search makes ``n_reference`` comparisons, so each may falsely match with at most
    ``fmr / n_reference``; that tail lies beyond the measured impostor scores, so it is
    taken from a normal fit of them (mean + z * std).
    """
    from scipy.stats import norm

    return float(impostor_mean + norm.isf(fmr / n_reference) * impostor_std)


def run_demo(out: str | os.PathLike = "demo_out", data: str | os.PathLike | None = None,
             models_dir: str | os.PathLike = "Models", device: str = "auto",
             log: Callable[[str], None] = print) -> dict:
    from faceaudit import embed
    from faceaudit.stages import closest, cluster, identify, leakage, variability, verification
    from faceaudit.io.embeddings import load_embeddings
    from faceaudit.models.fetch import fetch_models
    from faceaudit.io.files import write_json
    from faceaudit.report.grid import pairs_figure
    from faceaudit.search import IndexOptions

    started = time.perf_counter()
    out = Path(out)
    source = find_demo_data(data, out / "data", log)
    log(f"1/7 faces: {source}")
    story = split_story(source, out / "data")
    log(f"    synthetic: {len(story['synthetic_people'])} people, reference: {len(story['reference_people'])} "
        f"people, leaked on purpose: {', '.join(story['leaked'])}")

    log("2/7 models: InsightFace's ArcFace MobileFaceNet (recognition) and SCRFD (detection), pinned and "
        "sha256-verified; for non-commercial research only")
    weights, _ = fetch_models([ARCH, ALIGN], models_dir, log=log)

    log("3/7 embeddings: ArcFace MobileFaceNet on SCRFD-aligned faces")
    files = {}
    for name in ("synthetic", "reference"):
        files[name] = out / "embeddings" / f"{name}.jsonl"
        summary = embed.embed_dataset(story[name], files[name], arch=ARCH, weights=weights, device=device,
                                      align=ALIGN, models_dir=models_dir, batch_size=32, workers=0,
                                      overwrite=True, progress=False, log=lambda _m: None)
        log(f"    {name}: {summary['total']} faces -> {files[name]}"
            + (f" ({summary['errors']} skipped, see {summary['errors_file']})" if summary.get("errors") else ""))

    log("4/7 variability: all mated vs all non-mated pairs, pyeer-exact metrics, 95% bootstrap CIs")
    sets = {name: load_embeddings(path) for name, path in files.items()}  # each file is parsed once
    results = {name: variability.run(sets[name], None, out, exhaustive=True, bootstrap=1000, stem=name)
               for name in ("synthetic", "reference")}
    for name, result in results.items():
        m = result["metrics"]
        log(f"    {name}: EER {m['eer']:.4f}  FMR100 {m['fmr100']:.4f}  FMR1000 {m['fmr1000']:.4f}  "
            f"d' {m['decidability']:.3f}  FDR {m['fdr']:.3f}")
    reference_metrics = results["reference"]["metrics"]
    verification_th = float(reference_metrics["fmr1000_th"])
    search_th = search_threshold(reference_metrics["imean"], reference_metrics["istd"], len(sets["reference"]))
    log(f"5/7 leakage: best match of every synthetic face among the reference faces, at the reference set's "
        f"FMR1000 threshold {verification_th:.4f} (one comparison) and at {search_th:.4f} (FMR 1e-3 per search "
        f"of the whole reference set)")
    leak_dir = out / "leakage"
    stats = leakage.run_leakage(files["synthetic"], files["reference"], out_dir=leak_dir, n_comparisons=None,
                                thresholds=[verification_th, search_th], flag_threshold=search_th,
                                device=device, progress=False, query=sets["synthetic"], reference=sets["reference"])
    flagged = sorted(stats["flagged_identities"], key=_natural)
    caught = sorted(set(flagged) & set(story["leaked"]), key=_natural)
    false_alarms = sorted(set(flagged) - set(story["leaked"]), key=_natural)
    missed = sorted(set(story["leaked"]) - set(flagged), key=_natural)
    for above in stats["above_threshold"]:
        log(f"    >= {above['threshold']:.4f}: {above['count']} of {stats['n']} synthetic faces match a reference face")
    log(f"    flagged identities (best match >= {search_th:.4f}): {', '.join(flagged) or 'none'}")
    log(f"    leaked identities caught {len(caught)}/{len(story['leaked'])}, missed: {', '.join(missed) or 'none'}, "
        f"false alarms: {', '.join(false_alarms) or 'none'}")

    log("6/7 closest pairs and their picture")
    closest_files = closest.run_closest(files["synthetic"], files["reference"], out_dir=leak_dir, top=20,
                                  device=device, progress=False, query=sets["synthetic"],
                                  reference=sets["reference"])
    csv_path = next(p for p in closest_files if str(p).endswith(".csv"))
    grid = pairs_figure(csv_path, story["reference"], story["synthetic"], leak_dir, samples=8)

    log("7/7 recognition: how well the network tells the synthetic people apart")
    recognition_dir = out / "recognition"
    with warnings.catch_warnings():  # 150 faces hold fewer pairs than the default sample: every one is used
        warnings.filterwarnings("ignore", ".*hold fewer pairs of a kind", FaceauditWarning)
        verified = verification.run(sets["synthetic"], out_dir=recognition_dir)
    accuracy = verified["accuracy"]["mean"]["accuracy"], verified["accuracy"]["std"]["accuracy"]
    reached = [t for t in verified["tar_at_far"] if t["reachable"]]
    log(f"    verification: 10-fold accuracy {accuracy[0]:.2%} +- {accuracy[1]:.2%} over all {verified['n_pairs']:,} pairs within "
        f"identity-disjoint folds; "
        + ", ".join(f"TAR@FAR={t['far_target']:g} {t['tar']:.2%}" for t in reached))
    identified = identify.run_identify(files["synthetic"], embeddings=sets["synthetic"],
                                       options=IndexOptions(device=device, progress=False),
                                       out_dir=recognition_dir / "Identification")
    log(f"    identification: rank-1 {identified['rank_accuracy']['1']:.2%} of {identified['mated_probes']} probes, "
        f"one gallery photo per person")
    clustered = cluster.run(sets["synthetic"], out_dir=recognition_dir / "Clustering", device=device,
                            progress=False, stem="synthetic")
    scores = clustered["scores"]
    log(f"    clustering at the model's threshold: {scores['clusters']} clusters for {scores['identities']} people, "
        f"NMI {scores['nmi']:.4f}, ARI {scores['ari']:.4f}, pairwise F1 {scores['pairwise_f1']:.4f}")

    report = {
        "data": str(source), "model": ARCH, "align": ALIGN, "weights": str(weights),
        "threshold_fmr1000_verification": verification_th, "threshold_fmr1000_search": search_th,
        "leaked_truth": story["leaked"], "flagged": flagged, "caught": caught, "missed": missed,
        "false_alarms": false_alarms,
        "variability": {name: {"metrics": r["metrics"], "ci": r["ci"]} for name, r in results.items()},
        "leakage_summary": {k: v for k, v in stats.items() if k != "files"},
        "recognition": {"verification_accuracy": accuracy, "tar_at_far": reached,
                        "rank_accuracy": identified["rank_accuracy"], "clustering": scores},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "demo_report.json", report)
    log("")
    log(f"done in {report['seconds']} s. Where things are, under {out}/:")
    log("  Figures/               mated vs non-mated densities (PNG)")
    log("  Figures_with_metrics/  the same with EER/FMR100/FMR1000 thresholds (PDF, PNG)")
    log("  Metrics/               All_Datasets_metrics.csv and <set>_metrics.json (with 95% CIs)")
    log("  SimilarityScores/      the mated and non-mated scores, one a line")
    log("  leakage/               best-match scores, CSV, figure, summary, identity flags, closest pairs, pair grid")
    log(f"  {grid}")
    log("  recognition/           verification (ROC, DET), identification (CMC), clustering (map, sizes)")
    log("  demo_report.json       the story in numbers")
    return report
