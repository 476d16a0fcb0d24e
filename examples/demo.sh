#!/usr/bin/env bash
# What `make demo` runs: annotate the bundled example video (examples/astronaut.mp4, made by
# examples/make_demo_video.py from public-domain material) into examples/output/.
#
#   bash examples/demo.sh                                                  # training-free zero-shot method
#   AVSEG_CHECKPOINT=/path/to/model_ov_avss_r50.pth bash examples/demo.sh  # OV-AVSS
#
# Without AVSEG_CHECKPOINT the zero-shot method runs: its models (CLAP, Grounding DINO, SAM, CLIP; about 2.3 GB)
# are downloaded on first use into the Hugging Face cache (`avseg weights list` shows them). Offline and without
# them, avseg prints one line naming the missing model and how to fetch it, and exits with code 1.
#
# Without CUDA the demo analyses one frame per second (each result held until the next): on 2 CPU cores a frame
# with sound costs the zero-shot method 15-30 s, so all 175 frames would take over an hour; 7 take minutes.
# AVSEG_DEMO_FPS=all analyses every frame anyway, AVSEG_DEMO_FPS=N analyses N frames per second.
set -u
cd "$(dirname "$0")/.."

if [ -x .venv/bin/avseg ]; then
    avseg=(.venv/bin/avseg)
    python=(.venv/bin/python)
elif command -v avseg >/dev/null 2>&1; then
    avseg=(avseg)
    python=(python3)
else
    avseg=(python3 -m avseg_cli)
    python=(python3)
fi

args=(annotate examples/astronaut.mp4 --classes woman,rocket,flag --out examples/output)
if [ -n "${AVSEG_CHECKPOINT:-}" ]; then
    args+=(--checkpoint "$AVSEG_CHECKPOINT")
fi
fps=${AVSEG_DEMO_FPS:-auto}
if [ "$fps" = auto ]; then
    if "${python[@]}" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        fps=all
    else
        fps=1
        echo "no CUDA: analysing 1 frame per second (AVSEG_DEMO_FPS=all analyses every frame)"
    fi
fi
if [ "$fps" != all ]; then
    if ! [[ "$fps" =~ ^[0-9]*\.?[0-9]+$ ]] || [[ "$fps" =~ ^0*\.?0*$ ]]; then
        echo "error: AVSEG_DEMO_FPS must be all, auto or a positive number of frames per second, got '$fps'" >&2
        exit 2
    fi
    args+=(--analysis-fps "$fps")
fi

"${avseg[@]}" "${args[@]}"
status=$?
if [ "$status" -eq 0 ]; then
    echo "open examples/output/astronaut.avseg.mp4 to watch the result"
fi
exit "$status"
