"""``faceaudit cluster``: do a dataset's embeddings group by its identity labels?"""
from __future__ import annotations

from pathlib import Path

from faceaudit.cli.common import add_search_options, cosine_type, positive_int, search_settings


def add(sub) -> None:
    from faceaudit.evaluate.clustering import DEFAULT_K, DEFAULT_MAX_ITERATIONS, GRAPH_ALGORITHMS, LINKAGES, METHODS
    from faceaudit.stages.cluster import DEFAULT_OUT, DEFAULT_TOP, SAMPLE_IDENTITIES

    p = sub.add_parser(
        "cluster", help="cluster the embeddings and score the clusters against the identity labels",
        description="Cluster the embeddings and compare the clusters with the identity labels: NMI, ARI, "
                    "Fowlkes-Mallows, pairwise and BCubed precision/recall/F1, cluster vs identity count; the "
                    "identity pairs merged into one cluster (two labels, one face) and the identities split "
                    "across clusters (one label, several faces); a 2-D projection and a cluster-size histogram. "
                    "Writes <stem>_<method>_clusters.csv, _metrics.json, _merged_identities.csv, "
                    "_split_identities.csv, _projection.png/.pdf and _cluster_sizes.png/.pdf.")
    p.add_argument("input", type=Path, help="embedding file (.json/.jsonl/.npz) with identity labels")
    p.add_argument("--method", choices=METHODS, default="graph",
                   help="graph: the k-nearest-neighbour graph cut at the threshold, split by --graph-algorithm "
                        "(exact blocked search, no N x N matrix); dbscan: scikit-learn's DBSCAN on that graph; "
                        "agglomerative and hdbscan: scikit-learn's, up to 10,000 embeddings; kmeans: K = the "
                        "number of identities (default: %(default)s)")
    p.add_argument("--threshold", type=cosine_type, default=None, metavar="T",
                   help="cosine similarity at which two images are linked (graph, dbscan, agglomerative) "
                        "(default: the model's FMR = 1e-3 threshold, from the 'arch' in the file's metadata)")
    p.add_argument("--k", type=positive_int, default=DEFAULT_K,
                   help="neighbours per image in the graph (default: %(default)s; more than the images of the "
                        "largest identity keeps every link of it)")
    p.add_argument("--graph-algorithm", choices=GRAPH_ALGORITHMS, default="chinese-whispers",
                   help="chinese-whispers: label propagation, robust to a few false links; components: connected "
                        "components, where one false link merges two identities (default: %(default)s)")
    p.add_argument("--n-clusters", type=positive_int, default=None,
                   help="kmeans: K (default: the number of identities); agglomerative: cut at K clusters instead "
                        "of at the threshold")
    p.add_argument("--min-samples", type=positive_int, default=5,
                   help="dbscan: neighbours (the image included) of a core image (default: %(default)s)")
    p.add_argument("--min-cluster-size", type=positive_int, default=5,
                   help="hdbscan: the smallest cluster (default: %(default)s)")
    p.add_argument("--linkage", choices=LINKAGES, default="average", help="agglomerative (default: %(default)s)")
    p.add_argument("--max-iterations", type=positive_int, default=DEFAULT_MAX_ITERATIONS,
                   help="chinese-whispers: rounds at most (default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=DEFAULT_TOP,
                   help="identity pairs written to _merged_identities.csv (default: %(default)s)")
    p.add_argument("--projection", choices=("auto", "tsne", "umap"), default="auto",
                   help="2-D projection: auto is UMAP when umap-learn is installed, else t-SNE (default: %(default)s)")
    p.add_argument("--sample-identities", type=positive_int, default=SAMPLE_IDENTITIES,
                   help="identities in the projection: those of the top findings, then random ones "
                        "(default: %(default)s)")
    p.add_argument("--no-figures", action="store_true", help="skip the projection and the histogram")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="output folder (default: %(default)s)")
    add_search_options(p)  # --seed (Chinese Whispers, k-means, the projection), kNN search, --skip-invalid
    p.set_defaults(func=_run_cluster)


def _run_cluster(args) -> int:
    from faceaudit.stages.cluster import run

    run(args.input, args.method, args.out, threshold=args.threshold, k=args.k, graph_algorithm=args.graph_algorithm,
        n_clusters=args.n_clusters, min_samples=args.min_samples, min_cluster_size=args.min_cluster_size,
        linkage=args.linkage, max_iterations=args.max_iterations, seed=args.seed, top=args.top,
        figures=not args.no_figures, projection=args.projection, sample_identities=args.sample_identities,
        **search_settings(args), skip_invalid=args.skip_invalid, echo=print)
    return 0
