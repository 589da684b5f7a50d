#!/usr/bin/env bash
# Writes one seed per edit case of crates/tug-edit/tests/cases into corpus/<target>/, in the input
# format of the fuzz targets (see src/lib.rs): a header line describing the edit, then the file.
set -euo pipefail
cd "$(dirname "$0")"
cases=../crates/tug-edit/tests/cases
for t in kustomize_image manifest_image yq_set helm_image redeploy; do mkdir -p "corpus/$t"; done
for dir in "$cases"/*/; do
  name=$(basename "$dir")
  input=$(find "$dir" -maxdepth 1 -type f ! -name edit ! -name 'expected.*' | head -n 1)
  read -r -a w < "$dir/edit"
  # JSON-quoted words (values with spaces) are seeded without their quotes.
  for i in "${!w[@]}"; do w[$i]=${w[$i]#\"}; w[$i]=${w[$i]%\"}; done
  case "${w[0]}" in
    kustomize-image) target=kustomize_image; header=${w[1]} ;;
    manifest-image) target=manifest_image; header=${w[1]} ;;
    set)
      target=yq_set; header="${w[1]}"$'\t'"${w[2]}"
      if [ "${w[3]:-}" = --type ]; then header+=$'\t'"${w[4]}"; fi ;;
    helm-image) target=helm_image; header="${w[1]}"$'\t'"${w[2]}" ;;
    redeploy)
      target=redeploy; header="$(basename "$input")"$'\t'"${w[1]}"$'\t'"${w[2]}"
      if [ -n "${w[3]:-}" ]; then header+=$'\t'"${w[3]}"; fi ;;
    *) continue ;;
  esac
  { printf '%s\n' "$header"; cat "$input"; } > "corpus/$target/case-$name"
done
