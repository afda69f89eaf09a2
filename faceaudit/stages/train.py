"""``faceaudit train``: train a face-recognition network on a dataset (often a synthetic one) and measure it,
after every epoch, on identities it never saw.

Files of ``RUN_DIR``:

- ``settings.json``: the run's settings and the dataset's fingerprint; a rerun with other settings is
  refused (``--overwrite`` starts over); ``--epochs``, ``--device``, ``--workers`` and ``--threads`` may change,
  and the dataset and ``--init`` file may move (they are compared by content);
- ``faces.npy`` + ``faces.json``: the decoded (aligned) faces, reused by reruns and ``faceaudit export``;
- ``split.csv``: every image with its identity and its side of the split (``train`` / ``val``);
  ``errors.tsv``: the images left out and why (only when there are some);
- ``checkpoint.pth``: the last finished epoch, from which the same command resumes;
- ``backbone.pth``: the backbone's state_dict in the architecture's InsightFace layout, after every epoch
  (``faceaudit embed --arch ARCH --weights RUN_DIR/backbone.pth``);
- ``metrics.csv``: one row per epoch (learning rate, loss, accuracy, held-out and training-identity
  verification numbers, their gap, seconds); ``curves.png/.pdf``: loss, accuracy and EER per epoch;
- ``summary.json``: settings, counts and the last epoch's numbers, when the run ends.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceaudit import checks
from faceaudit.embed.resume import ERRORS_HEADER
from faceaudit.embed.writer import error_rows
from faceaudit.errors import FaceauditError, Interrupted
from faceaudit.io.checkpoint import fingerprint
from faceaudit.io.files import atomic_write, read_json, write_csv, write_json
from faceaudit.train.augment import parse_augment
from faceaudit.train.data import (AugmentedFaces, Faces, classification_epoch, default_workers, eval_subset,
                                  prepare_faces, siamese_epoch, split_identities, validation_count)
from faceaudit.train.evaluation import NUMBERS, embed_rows, eval_set, verification_numbers
from faceaudit.train.loop import (SCHEDULES, Trainer, learning_rate, load_checkpoint, save_checkpoint,
                                  start_distributed)
from faceaudit.train.losses import DEFAULTS, LOSSES, build_loss
from faceaudit.stages.variability import pair_scores
from faceaudit.version import __version__

SETTINGS_FILE = "settings.json"
CHECKPOINT_FILE = "checkpoint.pth"
BACKBONE_FILE = "backbone.pth"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves"
SUMMARY_FILE = "summary.json"
#: settings a rerun may change: they alter neither the batches nor the arithmetic's inputs (the dataset and
#: the --init file are compared by content: ``dataset_fingerprint``, ``init_sha256``)
FREE_SETTINGS = ("dataset", "init", "epochs", "device", "workers", "threads")
RUN_FILES = (SETTINGS_FILE, CHECKPOINT_FILE, BACKBONE_FILE, METRICS_FILE, f"{CURVES_FILE}.png", f"{CURVES_FILE}.pdf",
             SUMMARY_FILE, "split.csv", "errors.tsv")
TRAINABLE_LOADERS = ("torch", "onnx")  # architectures built by our code (ONNX ones filled from initializers)


def check_settings(s: dict) -> None:
    """Every setting checked before any work; raises a one-line FaceauditError."""
    import faceaudit.models as models

    checks.seed(s["seed"])
    for key in ("epochs", "batch_size", "val_pairs", "eval_images"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] <= 0:
            raise FaceauditError(f"--{key.replace('_', '-')} must be a positive integer, got {s[key]!r}")
    if s["batch_size"] < 2:
        raise FaceauditError("--batch-size must be at least 2 (BatchNorm needs two samples)")
    lr = checks.finite(s["lr"], "--lr")
    if lr <= 0 or not 0 <= checks.finite(s["min_lr"], "--min-lr") <= lr:
        raise FaceauditError(f"--lr must be > 0 and --min-lr in [0, --lr], got {s['lr']} and {s['min_lr']}")
    if not 0 <= checks.finite(s["momentum"], "--momentum") < 1 or checks.finite(s["weight_decay"], "--weight-decay") < 0:
        raise FaceauditError(f"--momentum must be in [0, 1) and --weight-decay >= 0, got {s['momentum']} and "
                             f"{s['weight_decay']}")
    if s["schedule"] not in SCHEDULES:
        raise FaceauditError(f"unknown --schedule {s['schedule']!r}; use {' or '.join(SCHEDULES)}")
    if s["hold"] < 0 or s["t_max"] < 1:
        raise FaceauditError(f"--hold must be >= 0 and --t-max >= 1, got {s['hold']} and {s['t_max']}")
    build_loss(s["loss"], 8, 2, s["scale"], s["margin"])  # checks the loss, scale and margin
    if s["pairs_per_epoch"] is not None and (s["loss"] != "contrastive" or s["pairs_per_epoch"] <= 0):
        raise FaceauditError("--pairs-per-epoch is a positive number of positive pairs, for --loss contrastive only")
    validation_count(s["val_identities"], 1 << 30)
    if s["workers"] is not None and s["workers"] < 0:
        raise FaceauditError(f"--workers must be >= 0, got {s['workers']}")
    spec = models.get_spec(s["arch"])
    if spec.weights_loader not in TRAINABLE_LOADERS:
        raise FaceauditError(f"--arch {spec.name} cannot be trained: it is loaded whole from its file")
    if s["init"] is not None and not Path(s["init"]).is_file():
        raise FaceauditError(f"--init {s['init']}: no such file")


def init_backbone(arch: str, init: str | Path | None) -> torch.nn.Module:
    """A fresh backbone of ``arch``, or one filled from ``init`` by :func:`faceaudit.models.load_model`
    (strict: a file of another layout is an error naming its keys)."""
    import faceaudit.models as models

    if init is None:
        return models.create_model(arch)
    model, _ = models.load_model(arch, init, "cpu", option="--init")
    return model.train()


def _prepare_run_dir(run_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse a run folder of other settings; ``overwrite`` clears this command's files from it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FaceauditError(f"{run_dir}: exists and is not a folder")
    path = run_dir / SETTINGS_FILE
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "export", ignore_errors=True)
    elif path.is_file():
        before = read_json(path)
        diffs = [f"{key}: {before.get(key)!r} there, {value!r} now" for key, value in settings.items()
                 if key not in FREE_SETTINGS + ("faceaudit_version",) and before.get(key) != value]
        if diffs:
            raise FaceauditError(f"{run_dir} holds a run with other settings ({'; '.join(diffs[:4])}"
                                 f"{'; ...' if len(diffs) > 4 else ''}); use --overwrite to start over, "
                                 f"or another RUN_DIR")
    elif (run_dir / CHECKPOINT_FILE).exists():
        raise FaceauditError(f"{run_dir} holds a checkpoint but no {SETTINGS_FILE}; use --overwrite to start over")
    write_json(path, settings)


def run_key(settings: dict) -> str:
    """The digest a checkpoint must carry to resume this run."""
    return fingerprint(json.dumps({k: v for k, v in settings.items() if k not in FREE_SETTINGS + ("faceaudit_version",)},
                                  sort_keys=True))


def data_for(settings: dict, faces: Faces) -> tuple:
    """(split, evaluation sets) of a run: the same for the run, its resumption and ``faceaudit export``."""
    split = split_identities(faces.identities, settings["val_identities"], settings["seed"], settings["dataset"])
    sets = []
    if split.val_rows.size:
        val_rows = eval_subset(faces.identities, split.val_rows, settings["eval_images"], settings["seed"])
        val = eval_set("val", faces.identities, val_rows, settings["val_pairs"], settings["seed"])
        train_rows = eval_subset(faces.identities, split.train_rows, settings["eval_images"], settings["seed"],
                                 max_identities=val.n_identities)
        sets = [val, eval_set("train", faces.identities, train_rows, settings["val_pairs"], settings["seed"])]
    return split, sets


def set_numbers(forward, faces: np.ndarray, es) -> dict:
    """The verification numbers of one evaluation set embedded by ``forward``, as ``<set>_<number>``."""
    numbers = verification_numbers(pair_scores(embed_rows(forward, faces, es.rows), es.pairs), es)
    return {f"{es.name}_{key}": numbers[key] for key in NUMBERS}


def evaluate(backbone, spec, device, faces: np.ndarray, sets) -> dict:
    """Every number of every evaluation set, as ``<set>_<number>``, and the val - train EER gap."""
    from faceaudit.embed.embedder import Embedder

    row, embedder = {}, Embedder(backbone, spec, device)  # eval mode, as faceaudit embed
    try:
        for es in sets:
            row.update(set_numbers(embedder, faces, es))
    finally:  # the Embedder may have changed the layout (plain NCHW for fp32 on CUDA): training's again
        backbone.train().to(memory_format=torch.channels_last)
    if sets:
        row["eer_gap"] = row["val_eer"] - row["train_eer"]
    return row


def _write_split(run_dir: Path, faces: Faces, split) -> None:
    side = np.where(split.labels >= 0, "train", "val")
    write_csv(run_dir / "split.csv", ("member", "identity", "split"), zip(faces.members, faces.identities, side))
    if faces.errors:  # the format of faceaudit embed's errors file
        with atomic_write(run_dir / "errors.tsv", "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(ERRORS_HEADER + error_rows(faces.errors))


def _write_progress(run_dir: Path, trainer, history: list[dict]) -> None:
    state = {key: value.detach().contiguous().cpu() for key, value in trainer.backbone.state_dict().items()}
    with atomic_write(run_dir / BACKBONE_FILE, "wb") as out:
        torch.save(state, out)
    columns = list(dict.fromkeys(key for row in history for key in row))
    write_csv(run_dir / METRICS_FILE, columns, ([row.get(c, "") for c in columns] for row in history))


def run(dataset, run_dir, *, arch: str = "mobilefacenet", loss: str = "arcface", scale: float | None = None,
        margin: float | None = None, epochs: int = 15, batch_size: int = 64, lr: float = 0.1, min_lr: float = 1e-3,
        momentum: float = 0.5, weight_decay: float = 0.0, schedule: str = "cosine", hold: int = 10, t_max: int = 5,
        augment: str | None = "notebook", val_identities: int | float = 0.1, val_pairs: int = 10000,
        eval_images: int = 2000, pairs_per_epoch: int | None = None, init=None, align: str | None = None,
        models_dir="Models", seed: int = 42, device: str = "auto", workers: int | None = None,
        threads: int | None = None, overwrite: bool = False, progress: bool = True, figures: bool = True,
        echo: Callable[[str], None] = print) -> dict:
    """Train, evaluate after each epoch, checkpoint; returns the summary written to ``summary.json``."""
    import faceaudit.models as models
    from faceaudit.embed.embedder import default_threads
    from faceaudit.faces import create_aligner
    from faceaudit.io.sources import open_source

    names = parse_augment(augment)
    settings = {"dataset": str(dataset), "arch": models.get_spec(arch).name, "loss": loss, "epochs": epochs,
                "scale": scale if scale is not None or loss not in LOSSES else DEFAULTS[loss][0],
                "margin": margin if margin is not None or loss not in LOSSES else DEFAULTS[loss][1],
                "batch_size": batch_size, "lr": lr, "min_lr": min_lr, "momentum": momentum,
                "weight_decay": weight_decay, "schedule": schedule, "hold": hold, "t_max": t_max,
                "augment": list(names), "val_identities": val_identities, "val_pairs": val_pairs,
                "eval_images": eval_images, "pairs_per_epoch": pairs_per_epoch, "init": None if init is None else str(init),
                "align": align or "none", "seed": seed, "device": device, "workers": workers, "threads": threads}
    check_settings(settings)
    spec = models.get_spec(arch)
    initial = None if init is None else init_backbone(spec.name, init)  # a file that does not fit: refused now
    aligner = create_aligner(settings["align"], models_dir)
    source = open_source(dataset)
    dist, torch_device = start_distributed(device)
    settings.update(dataset_fingerprint=source.fingerprint(), world_size=dist.world,
                    init_sha256=None if init is None else models.sha256_file(init), faceaudit_version=__version__)
    run_dir = Path(run_dir)
    if torch_device.type == "cpu":
        torch.set_num_threads(threads or default_threads())
    workers = default_workers(torch_device) if workers is None else workers
    lock = None
    try:
        if dist.main:
            from faceaudit.embed.resume import lock_output
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = lock_output(run_dir / "train")
            _prepare_run_dir(run_dir, settings, overwrite)
        faces = None
        if dist.main:  # the other processes wait for the cache, then read it
            faces = prepare_faces(source, settings["dataset_fingerprint"], run_dir, spec.input_size,
                                  spec.channel_order, aligner, settings["align"], workers, progress)
        dist.barrier()
        faces = faces or prepare_faces(source, settings["dataset_fingerprint"], run_dir, spec.input_size,
                                       spec.channel_order, aligner, settings["align"], 0, False)
        split, sets = data_for(settings, faces)
        if dist.main:
            _write_split(run_dir, faces, split)
        return _train(settings, run_dir, faces, split, sets, spec, torch_device, dist, names, workers, progress,
                      figures, echo, initial)
    finally:
        dist.stop()
        if lock is not None:
            from faceaudit.embed.resume import unlock_output
            unlock_output(lock)


def _train(settings, run_dir: Path, faces: Faces, split, sets, spec, device, dist, names, workers, progress,
           figures, echo, initial) -> dict:
    s = settings
    torch.manual_seed(s["seed"])  # the same initial weights and head, whatever ran before
    backbone = initial if initial is not None else init_backbone(s["arch"], None)
    objective = build_loss(s["loss"], spec.embedding_dim, len(split.classes), s["scale"], s["margin"])
    array = faces.array()
    key, checkpoint = run_key(s), run_dir / CHECKPOINT_FILE
    state = load_checkpoint(checkpoint, key)
    if state is None and s["init"] is not None and hasattr(objective, "imprint") and dist.main:
        from faceaudit.embed.embedder import Embedder  # DistributedDataParallel then copies rank 0's head

        vectors = embed_rows(Embedder(backbone.to(device), spec, device), array, split.train_rows)
        backbone.train()
        objective.imprint(torch.from_numpy(vectors), torch.from_numpy(split.labels[split.train_rows]))
    trainer = Trainer(backbone, objective, spec, device, lr=s["lr"], momentum=s["momentum"],
                      weight_decay=s["weight_decay"], dist=dist,
                      schedule=lambda e: learning_rate(e, s["lr"], s["min_lr"], s["schedule"], s["hold"], s["t_max"]))
    history, start = ([], 0) if state is None else (list(state["history"]), int(state["epochs_done"]))
    if state is not None:
        trainer.load_state(state)
        echo(f"resuming {run_dir} after epoch {start} of {s['epochs']}")
    dataset = AugmentedFaces(faces, names, s["seed"])
    rank, world = dist.rank, dist.world
    epoch, done = start, start
    if start == 0 and dist.main and sets:  # the starting point: a random network, or the --init one
        history = [{"epoch": 0, **evaluate(trainer.backbone, spec, device, array, sets)}]
        echo(epoch_line(history[0]))
    try:
        for epoch in range(start, s["epochs"]):
            if s["loss"] == "contrastive":
                plan = siamese_epoch(split.train_rows, faces.identities, s["batch_size"], s["seed"], epoch, rank, world,
                                     s["pairs_per_epoch"])
            else:
                plan = classification_epoch(split.train_rows, split.labels, s["batch_size"], s["seed"], epoch, rank,
                                            world)
            began = time.perf_counter()
            row = {"epoch": epoch + 1, **trainer.run_epoch(dataset, plan, workers, f"epoch {epoch + 1}/{s['epochs']}",
                                                           progress)}
            row["seconds"] = time.perf_counter() - began
            if dist.main:
                began = time.perf_counter()
                row.update(evaluate(trainer.backbone, spec, device, array, sets))
                row["eval_seconds"] = time.perf_counter() - began
                history.append(row)
                save_checkpoint(checkpoint, trainer, epoch + 1, history, key)
                done = epoch + 1
                _write_progress(run_dir, trainer, history)
                echo(epoch_line(row))
    except KeyboardInterrupt:
        kept = (f"{checkpoint} holds epoch {done} of {s['epochs']}" if done else
                f"no epoch finished yet (the faces stay cached in {run_dir / 'faces.npy'})")
        raise Interrupted(f"interrupted in epoch {epoch + 1}; {kept}; run the same command to resume") from None
    summary = _summary(s, run_dir, faces, split, sets, history)
    if dist.main:
        if figures and history:
            from faceaudit.report.training import plot_training
            from faceaudit.report.plots import save_figure
            summary["figures"] = [str(p) for p in save_figure(plot_training(history, s["loss"]), run_dir / CURVES_FILE,
                                                              formats=("png", "pdf"))]
        write_json(run_dir / SUMMARY_FILE, summary)
        echo("\n".join(summary_lines(summary)))
    return summary


def epoch_line(row: dict) -> str:
    line = (f"epoch {row['epoch']}: lr {row['lr']:.4g}, loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}, "
            f"{row['seconds']:.0f} s" if "loss" in row else "before training")
    if "val_eer" in row:
        line += (f"; held-out EER {row['val_eer']:.2%}, k-fold accuracy {row['val_accuracy']:.2%}; "
                 f"training identities EER {row['train_eer']:.2%}")
    return line


def _summary(settings, run_dir, faces: Faces, split, sets, history) -> dict:
    last = history[-1] if history else {}
    return {"run_dir": str(run_dir), "settings": settings, "epochs_done": sum(1 for row in history if "loss" in row),
            "images": len(faces.members), "images_left_out": len(faces.errors),
            "train_identities": len(split.classes), "train_images": int(split.train_rows.size),
            "val_identities": len(split.val_identities), "val_images": int(split.val_rows.size),
            "eval_sets": {es.name: {"identities": es.n_identities, "images": int(es.rows.size),
                                    "mated_pairs": int(es.mated.sum()), "non_mated_pairs": int((~es.mated).sum()),
                                    "folds": es.n_folds} for es in sets},
            "before_training": history[0] if history and history[0]["epoch"] == 0 else None,
            "last_epoch": last, "backbone": str(run_dir / BACKBONE_FILE),
            "train_seconds": sum(row.get("seconds", 0.0) for row in history)}


def summary_lines(summary: dict) -> list[str]:
    s, last = summary["settings"], summary["last_epoch"]
    head = f"{s['loss']}" + (f", s {s['scale']:g}" if s["scale"] is not None else "") + f", m {s['margin']:g}"
    lines = [f"trained {s['arch']} ({head}) for {summary['epochs_done']} epochs on {summary['train_images']} faces "
             f"of {summary['train_identities']} identities; {summary['val_identities']} identities "
             f"({summary['val_images']} faces) held out"]
    start = summary["before_training"]
    if start:
        lines.append(f"before training: held-out EER {start['val_eer']:.2%}, training identities EER "
                     f"{start['train_eer']:.2%}")
    if "val_eer" in last:
        lines.append(f"held-out identities: EER {last['val_eer']:.2%}, k-fold accuracy {last['val_accuracy']:.2%} "
                     f"± {last['val_accuracy_std']:.2%}, F1 {last['val_f1']:.3f} (threshold: cosine "
                     f"{last['val_f1_threshold']:.4f}, distance {last['val_f1_distance']:.4f})")
        lines.append(f"training identities: EER {last['train_eer']:.2%}, k-fold accuracy {last['train_accuracy']:.2%}, "
                     f"F1 {last['train_f1']:.3f}; gap (held-out - training EER): {last['eer_gap']:+.2%}")
    lines.append(f"backbone: {summary['backbone']} (faceaudit embed --arch {s['arch']} --weights {summary['backbone']})")
    return lines
