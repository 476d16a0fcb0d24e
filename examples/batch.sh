#!/usr/bin/env bash
# Annotate every video in a folder. Run it again after an interruption or a failure: videos whose
# outputs are complete are skipped (--skip-existing), so only the rest is done.
#
#   bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]                   # zero-shot method
#   AVSEG_CHECKPOINT=model.pth bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [options]   # OV-AVSS
#
# Example: AVSEG_CHECKPOINT=model_ov_avss_r50.pth bash examples/batch.sh clips annotated piano,violin,man --no-masks
# CLASSES may be left out (bash examples/batch.sh clips annotated --no-masks): a default list is used. OUT_DIR may
# be VIDEO_DIR: avseg's own outputs there (*.avseg.mp4) are not taken for input videos. The status of every video
# is written to OUT_DIR/summary.json (--json-summary).
# Exit code: avseg's (0 all done, 1 some videos failed or avseg could not start, 2 usage error, 130 interrupted,
# 143 terminated); --help prints this help.
set -u
usage="usage: bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]  (--help: more)"
fail() {  # a usage error: one line, exit code 2
    echo "batch.sh: error: $1" >&2
    exit 2
}
usage_error() { fail "$1; $usage"; }

case "${1:-}" in
    -h|--help)
        sed -n '2,/^set -u$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0 ;;
esac
if [ $# -lt 2 ]; then usage_error "VIDEO_DIR and OUT_DIR are required"; fi
in_dir=$1
out_dir=$2
for name in VIDEO_DIR OUT_DIR; do
    value=$in_dir; [ "$name" = OUT_DIR ] && value=$out_dir
    case "$value" in
        -*) usage_error "$name expected before any option, got '$value'" ;;
        "") usage_error "$name is empty" ;;
    esac
done
if [ ! -d "$in_dir" ]; then
    if [ -e "$in_dir" ]; then fail "VIDEO_DIR is not a folder: $in_dir"; fi
    fail "VIDEO_DIR does not exist: $in_dir"
fi
shift 2
classes=man,woman,guitar,piano,violin,dog,car
if [ $# -gt 0 ]; then
    case "$1" in
        -*) ;;                                    # no CLASSES, only avseg options
        *) [ -n "$1" ] && classes=$1; shift ;;
    esac
fi
model=()
if [ -n "${AVSEG_CHECKPOINT:-}" ]; then model=(--checkpoint "$AVSEG_CHECKPOINT"); fi

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$root/.venv/bin/avseg" ]; then avseg="$root/.venv/bin/avseg"; python="$root/.venv/bin/python"
else avseg=avseg; python=python3; fi

shopt -s nullglob nocaseglob
videos=("$in_dir"/*.{mp4,mkv,mov,webm,avi,m4v})
if [ "${#videos[@]}" -eq 0 ]; then
    fail "no videos (*.mp4 *.mkv *.mov *.webm *.avi *.m4v) in $in_dir"
fi

# avseg makes OUT_DIR (and removes it again if it stays empty); the summary is read back for the messages below:
# avseg leaves out of the run the outputs of its earlier runs that the glob picked up (OUT_DIR = VIDEO_DIR).
summary="$out_dir/summary.json"
started=$(mktemp)  # the summary is read only if this run wrote it (avseg may stop before any video: its line says why)
trap 'rm -f "$started"' EXIT
"$avseg" annotate "${videos[@]}" --classes "$classes" ${model[@]+"${model[@]}"} \
    --out "$out_dir" --skip-existing --json-summary "$summary" "$@"
status=$?
if [ ! -f "$summary" ] || [ ! "$summary" -nt "$started" ]; then
    exit "$status"
fi

case "$status" in
    0) "$python" - "$summary" "$out_dir" <<'PY' || echo "all videos annotated (or already done) in $out_dir"
import json, sys
counts = json.load(open(sys.argv[1], encoding="utf-8"))["counts"]
total = sum(counts.values())
print(f"all {total} video{'' if total == 1 else 's'} annotated in {sys.argv[2]} "
      f"({counts.get('done', 0)} now, {counts.get('skipped', 0)} already done)")
PY
       ;;
    1) echo "some videos failed; run this script again to retry only those:" >&2
       "$python" - "$summary" <<'PY' >&2
import json, sys
summary = json.load(open(sys.argv[1], encoding="utf-8"))
for item in summary["files"]:
    if item["status"] == "failed":
        error = item["error"] or "failed"  # most errors name the file already
        print("  " + (error if item["input"] in error else f"{item['input']}: {error}"))
PY
       ;;
    130) echo "interrupted: run this script again to continue" >&2 ;;
    *) echo "avseg annotate stopped with exit code $status" >&2 ;;
esac
exit "$status"
