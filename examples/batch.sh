#!/usr/bin/env bash
# Annotate every video in a folder. Run it again after an interruption or a failure: videos whose
# outputs are complete are skipped (--skip-existing), so only the rest is done.
#
#   bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]                   # zero-shot method
#   AVSEG_CHECKPOINT=model.pth bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [options]   # OV-AVSS
#
# Example: AVSEG_CHECKPOINT=model_ov_avss_r50.pth bash examples/batch.sh clips annotated piano,violin,man --no-masks
# Exit code: avseg's (0 all done, 1 some videos failed, 2 usage error, 130 interrupted).
set -u
in_dir=${1:?usage: batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]}
out_dir=${2:?usage: batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]}
classes=${3:-man,woman,guitar,piano,violin,dog,car}
shift $(( $# < 3 ? $# : 3 ))
model=()
if [ -n "${AVSEG_CHECKPOINT:-}" ]; then model=(--checkpoint "$AVSEG_CHECKPOINT"); fi

cd "$(dirname "$0")/.." && root=$PWD && cd - >/dev/null
if [ -x "$root/.venv/bin/avseg" ]; then avseg="$root/.venv/bin/avseg"; python="$root/.venv/bin/python"
else avseg=avseg; python=python3; fi

shopt -s nullglob nocaseglob
videos=("$in_dir"/*.{mp4,mkv,mov,webm,avi,m4v})
if [ "${#videos[@]}" -eq 0 ]; then
    echo "no videos (*.mp4 *.mkv *.mov *.webm *.avi *.m4v) in $in_dir" >&2
    exit 2
fi

mkdir -p "$out_dir"
summary="$out_dir/summary.json"
"$avseg" annotate "${videos[@]}" --classes "$classes" ${model[@]+"${model[@]}"} \
    --out "$out_dir" --skip-existing --json-summary "$summary" "$@"
status=$?

case "$status" in
    0) echo "all ${#videos[@]} videos annotated (or already done) in $out_dir" ;;
    1) echo "some videos failed; run this script again to retry only those:" >&2
       "$python" - "$summary" <<'PY' >&2
import json, sys
summary = json.load(open(sys.argv[1], encoding="utf-8"))
for item in summary["files"]:
    if item["status"] == "failed":
        print(f"  {item['input']}: {item['error']}")
PY
       ;;
    130) echo "interrupted: run this script again to continue" >&2 ;;
    *) echo "avseg annotate stopped with exit code $status" >&2 ;;
esac
exit "$status"
