#!/usr/bin/env bash
# Mated vs non-mated analysis of every embedding file in a folder.
#   ./run_all.sh [EMBEDDINGS_FOLDER] [N_COMPARISONS]
# Outputs go under the working directory: SimilarityScores/, Figures/,
# Figures_with_metrics/ and Metrics/All_Datasets_metrics.csv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
folder="${1:-.}"
n="${2:-10000}"
python="${PYTHON:-python3}"
shopt -s nullglob
files=("$folder"/*.json "$folder"/*.jsonl "$folder"/*.npz)
found=0
failed=()  # one bad file is reported and skipped; the script fails at the end if any file did
for f in "${files[@]}"; do
  case "$f" in *.meta.json) continue ;; esac
  found=1
  echo "== $f"
  "$python" "$here/analyze_embeddings.py" "$f" --n_comparisons "$n" \
    && "$python" "$here/compute_similarities.py" "$f" --n_comparisons "$n" || failed+=("$f")
done
if [ "$found" = 0 ]; then
  echo "run_all.sh: error: no .json, .jsonl or .npz embedding files in $folder" >&2
  exit 2
fi
"$python" "$here/analyze_embeddings_with_metrics.py"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_all.sh: error: ${#failed[@]} file(s) failed: ${failed[*]}" >&2
  exit 1
fi
