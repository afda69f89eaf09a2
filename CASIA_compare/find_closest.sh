#!/usr/bin/env bash
# The closest pairs of every embedding file in a folder with CASIA (the paper's loop).
#   ./find_closest.sh [EMBEDDINGS_DIR]        (default: Embeddings, holding CASIA.json)
# Every query of each file is compared (n = its number of lines); the JSONs land in the current folder.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
input_folder="${1:-Embeddings}"
PYTHON="${PYTHON:-python3}"
shopt -s nullglob
files=("$input_folder"/*.json)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "find_closest.sh: error: no .json files in $input_folder" >&2
    exit 2
fi
# one bad file is reported and skipped; the script fails at the end if any file did
failed=()
for file in "${files[@]}"; do
    [[ "$(basename "$file")" == "CASIA.json" ]] && continue
    [[ "$file" == *.meta.json ]] && continue
    echo "Processing: $file"
    # Count lines (a last line without a newline counts too)
    n_comparisons=$(grep -c '' "$file" || true)
    if [[ "$n_comparisons" -eq 0 ]]; then
        echo "find_closest.sh: error: $file: empty file, skipped" >&2
        failed+=("$file")
        continue
    fi
    "$PYTHON" "$HERE/find_closest.py" "$file" --n_comparisons "$n_comparisons" \
        --casia_file "$input_folder"/CASIA.json || failed+=("$file")
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "find_closest.sh: error: ${#failed[@]} file(s) failed: ${failed[*]}" >&2
    exit 1
fi
