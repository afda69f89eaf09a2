"""Identification (1:N): who is this probe, among the gallery's identities? Rank-k accuracy, the
CMC curve, k-nearest-neighbour accuracy and open-set DIR at FPIR, from one embedding file.

- gallery and probes: per identity ``gallery_per_identity`` seeded random images to the gallery,
  the rest probes (default 1); or the challenge notebook's image split (``split_images``); or a
  separate gallery file or shard folder, every embedding a probe;
- ``open_set``: that share of identities is held out of the gallery; their images are the
  non-mated probes of DIR at FPIR (with a separate gallery: the probes of identities it lacks);
- ranks: exact (:func:`faceaudit.search.mated_ranks`, the full CMC) with ``index="exact"``;
  with an approximate index, from each probe's candidate list, exact up to the largest rank asked;
- conventions (ties, thresholds) as :mod:`faceaudit.evaluate.identification`.

Outputs under ``out_dir``, ``<stem>`` the embedding file's name: ``<stem>_identification.json``
(everything), ``<stem>_rank_accuracy.csv/.md``, ``<stem>_cmc.csv/.png/.pdf``,
``<stem>_dir_at_fpir.csv/.md`` (open set), ``<stem>_probes.csv`` (each probe's rank and scores)
and the page ``<stem>_identification.md/.html``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from faceaudit import search
from faceaudit.errors import FaceauditError, FaceauditWarning
from faceaudit.evaluate import identification as ident
from faceaudit.io.embeddings import EmbeddingSet, load_embeddings
from faceaudit.io.files import write_csv, write_json
from faceaudit.io.shards import load_reference_set
from faceaudit.report.page import Page, write_table
from faceaudit.report.plots import plot_cmc, save_figure
from faceaudit.search.engine import reference_parts
from faceaudit.search.index import backend
from faceaudit.search.ranks import identity_runs, mated_scores as exact_mated_scores
from faceaudit.stages.variability import dataset_stem

DEFAULT_RANKS = (1, 5, 10)
DEFAULT_CMC_RANKS = 100
MAX_CANDIDATE_BYTES = 4 << 30  # approximate indexes: the largest candidate lists kept for ranks
TIE_RULE = ("rank = 1 + the number of other gallery identities whose best image scores >= the mated "
            "identity's best image (ties count against the probe, as bob.measure)")


def _gallery_codes(gallery, uniques: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sorted gallery identities, code of each gallery row), read shard by shard."""
    parts = [np.asarray(a) for _, a in reference_parts(gallery.identities)]
    if uniques is None:
        uniques = np.unique(np.concatenate([np.unique(p) for p in parts]))
    return uniques, np.concatenate([np.searchsorted(uniques, p) for p in parts]).astype(np.int64)


def _check_settings(ranks, knn, vote, open_set, gallery_file, split_images, gallery_per_identity, cmc_ranks):
    if not ranks or min(ranks) <= 0:
        raise FaceauditError(f"ranks must be > 0, got {list(ranks)}")
    if knn is not None and knn <= 0:
        raise FaceauditError(f"--knn K must be > 0, got {knn}")
    if vote not in ident.VOTES:
        raise FaceauditError(f"unknown vote {vote!r}: use {' or '.join(ident.VOTES)}")
    if cmc_ranks <= 0 or gallery_per_identity <= 0:
        raise FaceauditError("the CMC length and gallery images per identity must be > 0")
    if gallery_file is not None and (open_set or split_images):
        raise FaceauditError("with --gallery every embedding is a probe: --open-set and --split-images split "
                             "one file (the open-set probes are those whose identity the gallery lacks)")
    if open_set and split_images:
        raise FaceauditError("--open-set holds identities out of the per-identity split; it cannot be combined "
                             "with --split-images")
    if open_set is not None and not 0 < open_set < 1:
        raise FaceauditError(f"--open-set must be a fraction in (0, 1), got {open_set}")


def _gallery_and_probes(data: EmbeddingSet, embeddings_file, gallery_file, split_images, gallery_per_identity,
                        open_set, seed, skip_invalid):
    """(gallery with each identity's images next to each other, probe rows of ``data``, split settings)."""
    if gallery_file is not None:
        gallery = load_reference_set(gallery_file, skip_invalid=skip_invalid)
        if gallery.dim != data.dim:
            raise FaceauditError(f"{gallery_file}: vectors have {gallery.dim} dimensions but {embeddings_file} "
                                 f"has {data.dim}; both must come from the same model")
        if isinstance(gallery, EmbeddingSet):  # shards are searched as written: identity_runs checks them
            gallery = gallery.subset(np.argsort(gallery.identities, kind="stable"))
        return gallery, np.arange(len(data)), {"mode": "gallery file", "gallery": str(gallery_file)}
    if split_images:
        s = ident.split_images(len(data), split_images, seed)
        split = {"mode": "images", "gallery_fraction": split_images}
    else:
        s = ident.split_by_identity(data.identities, gallery_per_identity, open_set or 0.0, seed)
        split = {"mode": "per identity", "gallery_per_identity": gallery_per_identity,
                 "open_set_fraction": open_set or 0.0, "held_out_identities": [str(i) for i in s.held_out_identities]}
    if len(s.gallery) == 0:
        raise FaceauditError(f"{embeddings_file}: the gallery is empty")
    gallery = data.subset(s.gallery[np.argsort(data.identities[s.gallery], kind="stable")])
    return gallery, np.sort(np.concatenate([s.probes, s.held_out])), split


def _exact_options(options: search.IndexOptions) -> dict:
    return dict(device=options.device, precision=options.precision,
                memory_budget_bytes=options.memory_budget_bytes, progress=options.progress)


def _mated_ranks(index, probes, mated_codes, gallery, gallery_codes, cmc_ranks, options):
    """(exact mated scores, ranks): exact ranks in one pass with ``exact``; otherwise ranks from
    candidate lists deep enough for rank ``cmc_ranks`` (deeper ones: NOT_FOUND)."""
    if index == "exact":
        found = search.mated_ranks(probes, mated_codes, gallery.vectors, gallery_codes, **_exact_options(options))
        return found.scores, found.ranks
    first, count = identity_runs(gallery_codes)
    depth = min(len(gallery), (cmc_ranks - 1) * int(count.max()) + 1)
    need = len(probes) * depth * 12  # the candidate lists: float32 scores and int64 rows
    if need > MAX_CANDIDATE_BYTES:
        raise FaceauditError(f"--index {index}: ranks up to --cmc-ranks {cmc_ranks} need {depth:,} candidates per "
                             f"probe (an identity has {int(count.max()):,} gallery images), {need / 2**30:.1f} GiB "
                             f"for {len(probes):,} probes; lower --cmc-ranks, or use --index exact")
    found = search.search_index(index, probes, gallery.vectors, depth, options)
    labels = np.where(found.indices >= 0, gallery_codes[np.maximum(found.indices, 0)], -1)
    return (exact_mated_scores(probes, mated_codes, gallery.vectors, first, count),
            ident.ranks_from_candidates(labels, found.scores, mated_codes))


def _knn(index, data, voters, mated, mated_codes, gallery, gallery_codes, id_list, k, vote, options):
    """KNN accuracy over ``voters`` (rows of ``data``; one without a gallery identity is an error) and
    each row's voted identity."""
    nb = search.search_index(index, data.vectors[voters], gallery.vectors, k, options)
    predicted = ident.knn_vote(np.where(nb.indices >= 0, gallery_codes[np.maximum(nb.indices, 0)], -1),
                               nb.scores, vote)
    true_codes = np.full(len(voters), -1)
    known = np.isin(voters, mated)
    true_codes[known] = mated_codes[np.searchsorted(mated, voters[known])]
    voted = np.full(len(data), "", dtype=object)
    voted[voters] = id_list[predicted]
    return ({"k": k, "vote": vote, "probes": len(voters), "accuracy": float(np.mean(predicted == true_codes))},
            voted)


def run_identify(embeddings_file: str | os.PathLike, *, gallery_file: str | os.PathLike | None = None,
                 gallery_per_identity: int = 1, split_images: float | None = None, ranks=None,
                 cmc_ranks: int = DEFAULT_CMC_RANKS, knn: int | None = None, vote: str = "majority",
                 open_set: float | None = None, fpirs=ident.DEFAULT_FPIRS, index: str = "exact",
                 options: search.IndexOptions | None = None, out_dir="identify_out", skip_invalid: bool = False,
                 embeddings: EmbeddingSet | None = None) -> dict:
    """Split (or take the gallery), search, score and write every output; returns the summary.

    ``ranks``: None gives 1, 5, 10 (those the gallery has identities for); a rank asked for that
    exceeds the gallery's identities is an error.
    """
    asked_ranks = ranks is not None
    ranks = sorted({int(r) for r in (ranks if asked_ranks else DEFAULT_RANKS)})
    _check_settings(ranks, knn, vote, open_set, gallery_file, split_images, gallery_per_identity, cmc_ranks)
    backend(index)  # an unknown kind fails before any work
    options = options or search.IndexOptions()
    seed = options.seed
    data = embeddings if embeddings is not None else load_embeddings(embeddings_file, skip_invalid=skip_invalid)

    gallery, probes, split = _gallery_and_probes(data, embeddings_file, gallery_file, split_images,
                                                 gallery_per_identity, open_set, seed, skip_invalid)
    id_list, gallery_codes = _gallery_codes(gallery)
    split["seed"] = seed
    if len(gallery) == 0:
        raise FaceauditError("the gallery is empty")
    if len(probes) == 0:
        raise FaceauditError(f"{embeddings_file}: no probes (every image is in the gallery)")
    n_ids = len(id_list)
    if not asked_ranks:
        ranks = [r for r in ranks if r <= n_ids]
    if ranks[-1] > n_ids:
        raise FaceauditError(f"rank {ranks[-1]} is larger than the gallery ({n_ids} identities)")
    if knn is not None and knn > len(gallery):
        raise FaceauditError(f"--knn {knn} is larger than the gallery ({len(gallery)} images)")
    cmc_ranks = min(max(cmc_ranks, ranks[-1]), n_ids)

    pos = np.minimum(np.searchsorted(id_list, data.identities[probes]), n_ids - 1)
    known = id_list[pos] == data.identities[probes]
    mated, non_mated = probes[known], probes[~known]
    mated_codes = pos[known]
    if len(mated) == 0:
        raise FaceauditError("no probe has an identity in the gallery: nothing to identify")
    if len(non_mated) and not open_set:
        warnings.warn(f"{len(non_mated):,} probe(s) of {len(np.unique(data.identities[non_mated])):,} identities "
                      "have no gallery image: left out of rank-k and CMC, used as the non-mated probes of DIR at "
                      "FPIR", FaceauditWarning, stacklevel=2)

    q = data.vectors
    mated_scores, mated_ranks = _mated_ranks(index, q[mated], mated_codes, gallery, gallery_codes, cmc_ranks, options)
    cmc = ident.cmc(mated_ranks, cmc_ranks)
    rank_rows = [[r, float(cmc[r - 1]), int(np.sum(mated_ranks <= r)), len(mated)] for r in ranks]

    knn_result, knn_pred = (None, None) if knn is None else _knn(
        index, data, mated if open_set else probes, mated, mated_codes, gallery, gallery_codes, id_list, knn, vote,
        options)
    open_rows, non_mated_best = [], None
    if len(non_mated):
        non_mated_best = (search.best_match_resumable(q, gallery.vectors, rows=non_mated, **_exact_options(options))
                          if index == "exact" else search.best_match_index(index, q[non_mated], gallery.vectors,
                                                                           options)).scores
        open_rows = ident.dir_at_fpir(mated_scores, mated_ranks, non_mated_best, fpirs)
        for row in open_rows:
            if not row["resolvable"]:
                warnings.warn(f"FPIR {row['fpir']:g} needs at least {int(np.ceil(1 / row['fpir'])):,} non-mated "
                              f"probes, there are {len(non_mated):,}: its threshold is just above the highest "
                              "non-mated score", FaceauditWarning, stacklevel=2)

    summary = {"input": str(embeddings_file), "index": index, "split": split,
               "index_options": {k: v for k, v in asdict(options).items() if k != "progress"},
               "gallery_images": len(gallery), "gallery_identities": n_ids, "probes": len(probes),
               "mated_probes": len(mated), "non_mated_probes": len(non_mated), "tie_rule": TIE_RULE,
               "rank_accuracy": {str(r): acc for r, acc, _, _ in rank_rows}, "cmc_ranks": cmc_ranks,
               "knn": knn_result, "open_set": open_rows}
    out, stem = Path(out_dir), dataset_stem(embeddings_file)
    files = _write_outputs(out, stem, summary, rank_rows, cmc, data, mated, mated_ranks, mated_scores, non_mated,
                           non_mated_best, knn_pred)
    json_path = out / f"{stem}_identification.json"
    summary["files"] = [str(f) for f in [json_path] + files]
    write_json(json_path, summary)
    return summary


def _write_outputs(out: Path, stem: str, summary: dict, rank_rows, cmc, data, mated, mated_ranks, mated_scores,
                   non_mated, non_mated_best, knn_pred) -> list[Path]:
    files = write_table(out / f"{stem}_rank_accuracy", ["rank", "accuracy", "correct", "mated_probes"], rank_rows)
    files.append(write_csv(out / f"{stem}_cmc.csv", ["rank", "identification_rate"],
                           [[r + 1, float(v)] for r, v in enumerate(cmc)]))
    files += save_figure(plot_cmc({stem: cmc}, f"CMC of {stem} ({len(mated):,} mated probes, "
                                               f"{summary['gallery_identities']:,} gallery identities)"),
                         out / f"{stem}_cmc", formats=("png", "pdf"))
    open_header = ["fpir", "threshold", "fpir_achieved", "dir", "non_mated_probes", "mated_probes"]
    if summary["open_set"]:
        files += write_table(out / f"{stem}_dir_at_fpir", open_header,
                             [[row[k] for k in open_header] for row in summary["open_set"]], digits=6)
    files.append(_write_probes(out / f"{stem}_probes.csv", data, mated, mated_ranks, mated_scores, non_mated,
                               non_mated_best, knn_pred))
    files += _page(out / f"{stem}_identification", stem, summary, rank_rows, files)
    return files


def _write_probes(path, data, mated, mated_ranks, mated_scores, non_mated, non_mated_best, knn_pred) -> Path:
    """One row per probe, in file order: its set, rank and mated score (mated), best score (non-mated),
    and the identity its neighbours voted for (with --knn)."""
    rows = np.concatenate([mated, non_mated])
    order = np.argsort(rows)
    blank = np.full(len(non_mated), "", dtype=object)
    rank = np.concatenate([np.where(mated_ranks == ident.NOT_FOUND, "", mated_ranks.astype(str)), blank])
    mated_s = np.concatenate([mated_scores.astype(np.float64).astype(object), blank])
    best = np.concatenate([np.full(len(mated), "", dtype=object),
                           blank if non_mated_best is None else non_mated_best.astype(np.float64).astype(object)])
    kind = np.repeat(["mated", "non-mated"], [len(mated), len(non_mated)])
    voted = (knn_pred[rows[order]] if knn_pred is not None else np.full(len(rows), "", dtype=object)).tolist()
    columns = zip(rows[order].tolist(), data.identities[rows[order]].tolist(), data.image_names[rows[order]].tolist(),
                  kind[order].tolist(), rank[order].tolist(), mated_s[order].tolist(), best[order].tolist(), voted)
    return write_csv(path, ["row", "identity", "image_name", "probe", "rank", "mated_score", "best_score",
                            "knn_identity"], columns)


def _page(path: Path, stem: str, summary: dict, rank_rows, files) -> list[Path]:
    page = Page(f"Identification: {stem}")
    page.text(f"{summary['probes']:,} probes ({summary['mated_probes']:,} mated, {summary['non_mated_probes']:,} "
              f"non-mated) against a gallery of {summary['gallery_images']:,} images of "
              f"{summary['gallery_identities']:,} identities; split: {summary['split']['mode']}, seed "
              f"{summary['split']['seed']}; search: {summary['index']}. Tie rule: {summary['tie_rule']}.")
    page.heading("Rank-k accuracy (closed set)").table(["rank", "accuracy", "correct", "mated probes"], rank_rows,
                                                       source=f"{stem}_rank_accuracy.csv")
    page.figure(path.with_name(f"{stem}_cmc.png"), "CMC curve", source=f"{stem}_cmc.csv")
    if summary["knn"]:
        k = summary["knn"]
        page.heading("k nearest neighbours").text(
            f"k = {k['k']}, {k['vote']} vote, {k['probes']:,} probes: accuracy {k['accuracy']:.4f}.")
    if summary["open_set"]:
        header = ["fpir", "threshold", "fpir_achieved", "dir"]
        page.heading("Open set: DIR at FPIR (rank 1)").table(
            header, [[row[h] for h in header] for row in summary["open_set"]], digits=6,
            source=f"{stem}_dir_at_fpir.csv")
    return page.write(path)


def format_summary(summary: dict) -> str:
    lines = [f"{summary['input']}: {summary['mated_probes']:,} mated probes, gallery of {summary['gallery_images']:,} "
             f"images / {summary['gallery_identities']:,} identities ({summary['index']} search)"]
    lines.append("  " + "  ".join(f"rank-{r} {acc:.4f}" for r, acc in summary["rank_accuracy"].items()))
    if summary["knn"]:
        k = summary["knn"]
        lines.append(f"  {k['k']}-NN ({k['vote']}) accuracy {k['accuracy']:.4f} over {k['probes']:,} probes")
    for row in summary["open_set"]:
        lines.append(f"  DIR {row['dir']:.4f} at FPIR {row['fpir']:g} (threshold {row['threshold']:.4f}, "
                     f"achieved FPIR {row['fpir_achieved']:.4g})")
    lines += [f"  wrote {f}" for f in summary.get("files", [])]
    return "\n".join(lines)
