#!/usr/bin/env bash
# The whole CASIA comparison for every dataset of a folder of embedding files.
#   ./run_all.sh [EMBEDDINGS_DIR] [N] [IMAGES_DIR]
#     EMBEDDINGS_DIR  holds CASIA.json and one <Dataset>.json per dataset (default: Embeddings)
#     N               images sampled per dataset for the best-match plots and values (default: 10000)
#     IMAGES_DIR      optional: CASIA.zip (or .tar.gz, .tgz, .tar, folder CASIA) and <Dataset>.<same>
#                     for the side-by-side figures (default: Images; skipped when absent)
# Outputs (in the current folder): <Dataset>_BestMatches_<N>.png/.pdf, SimilarityScores/, Closest/<Dataset>_Top100Global_<n>.json,
#          Extracted_paths/*_matches.csv, comparison_figures/.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
EMB="${1:-Embeddings}"
N="${2:-10000}"
IMAGES="${3:-Images}"
PYTHON="${PYTHON:-python3}"
export PYTHON

[[ -f "$EMB/CASIA.json" ]] || { echo "run_all.sh: error: $EMB/CASIA.json not found" >&2; exit 2; }

find_images() {  # the first existing archive or folder for a dataset name
    local name="$1" ext
    for ext in .zip .tar.gz .tgz .tar ""; do
        if [[ -e "$IMAGES/$name$ext" ]]; then echo "$IMAGES/$name$ext"; return 0; fi
    done
    return 1
}

shopt -s nullglob
status=0  # a failing dataset is reported and skipped; the script fails at the end
for file in "$EMB"/*.json; do
    name=$(basename "$file" .json)
    [[ "$name" == "CASIA" || "$file" == *.meta.json ]] && continue
    echo "== $name"
    "$PYTHON" "$HERE/compare_embeddings.py" "$file" --n_comparisons "$N" --casia_file "$EMB/CASIA.json" \
        && "$PYTHON" "$HERE/compute_similarities.py" "$file" --n_comparisons "$N" --casia_file "$EMB/CASIA.json" \
        || status=1
done

"$HERE/find_closest.sh" "$EMB" || status=1
mkdir -p Closest
for f in *_Top*Global_*.json; do mv -f "$f" Closest/; done
"$HERE/get_paths.sh" Closest Extracted_paths || status=1

casia_images=$(find_images CASIA || true)
if [[ -n "$casia_images" ]]; then
    for csv in Extracted_paths/*_matches.csv; do
        name=$(basename "$csv" _matches.csv)
        name="${name%%_Top*Global_*}"
        other=$(find_images "$name" || true)
        if [[ -z "$other" ]]; then echo "no images for $name in $IMAGES: figure skipped"; continue; fi
        "$PYTHON" "$HERE/plot_similar.py" "$csv" --casia-file "$casia_images" --other-file "$other" --samples 5 \
            || status=1
    done
else
    echo "no CASIA images in $IMAGES: comparison figures skipped"
fi
exit "$status"
