#!/usr/bin/env bash
# query_path,casia_path,similarity_score CSVs from the Top-K JSON files (no jq needed).
#   ./get_paths.sh [INPUT_DIR] [OUTPUT_DIR]   (defaults: Closest, ./Extracted_paths)
# Writes OUTPUT_DIR/<name>_matches.csv; strings quoted as jq's @csv did.
set -euo pipefail
INPUT_DIR="${1:-Closest}"
OUTPUT_DIR="${2:-./Extracted_paths}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUTPUT_DIR"
shopt -s nullglob
files=("$INPUT_DIR"/*.json)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "get_paths.sh: error: no .json files in $INPUT_DIR" >&2
    exit 2
fi
failed=()  # one bad file is reported and skipped; the script fails at the end if any file did
for json_file in "${files[@]}"; do
    base_name=$(basename "$json_file" .json)
    output_csv="$OUTPUT_DIR/${base_name}_matches.csv"
    if ! "$PYTHON" - "$json_file" "$output_csv" <<'PY'
import csv, json, os, sys, tempfile
src, dst = sys.argv[1], sys.argv[2]
try:
    with open(src, encoding="utf-8") as handle:
        doc = json.load(handle)
    results = doc["results"]
    rows = [[str(r["query_path"]), str(r["casia_path"]), float(r["similarity_score"])] for r in results]
except (OSError, ValueError, KeyError, TypeError) as exc:
    sys.exit(f"get_paths.sh: error: {src}: not a Top-K JSON file ({type(exc).__name__}: {exc})")
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), suffix=".tmp")
with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
    out.write("query_path,casia_path,similarity_score\n")
    csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(rows)
os.replace(tmp, dst)
PY
    then
        failed+=("$json_file")
        continue
    fi
    echo "Saved: $output_csv"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "get_paths.sh: error: ${#failed[@]} file(s) failed: ${failed[*]}" >&2
    exit 1
fi
