#!/usr/bin/env bash
# The CUDA checks and benchmarks, in one script for a GPU machine held for a short time.
#
#   bash benchmarks/cuda_session.sh env tests model predictor train      # first batch
#   bash benchmarks/cuda_session.sh env annotate zeroshot suite          # needs ffmpeg (IMAGEIO_FFMPEG_EXE)
#
# The device image lacks open_clip, torchvggish, moviepy, PyAV, pycocotools and ffmpeg: `bash
# benchmarks/device_wheels.sh` here first, then the two carrying calls its header gives (the second one runs this).
#
# Stages (each under its own time limit, so one slow stage does not eat the rest):
#   quick      the open questions in about 8 minutes, for a short loan (run it first): the CUDA tests written
#              without a GPU (syncs, pinned batches, CUDA graphs, fused CLIP, overlapped clips), the r50 train
#              loop fp32, the predictor with and without CUDA graphs and overlapped clips, annotate 360p with the
#              crop cap, the predictor profile
#   env        GPU, driver, torch and package versions
#   tests      tests/test_cuda.py (CUDA results against float64 CPU references, CUDA training and resume)
#   model      bench_model.py: r50 / swinb forward and forward+backward per 5-frame 360p clip, amp off/bf16/fp16,
#              gather vs grid_sample sampling, per-stage forward times
#   predictor  bench_predictor.py: whole r50 predictor (network + CLIP) per 360p frame, fp16/off, crop cap, gate
#   train      bench_train.py: the whole `avseg train` loop (data, VGGish, matcher, losses, AdamW) in it/s
#   annotate   bench_annotate.py: end-to-end annotate frames/s at 360p and 720p, every frame analysed (render
#              threads and render processes)
#   render     bench_annotate.py with fake predictors (I/O only; holding the GIL 16 ms per frame), threads and
#              processes: how rendering overlaps a GPU predictor's Python side on this host
#   zeroshot   bench_zeroshot.py on CUDA, 360p and 720p
#   graphs     CUDA graphs for the network: their CUDA tests, then r50 forward, predictor and annotate with and
#              without them (bench_model --runner graphs, bench_predictor +graphs, bench_annotate --cuda-graphs)
#   compile    bench_model with torch.compile (default and reduce-overhead modes): compile time and speed
#   profile    profile_cuda.py: predictor and training loop part by part, CLIP batch sizes and precisions
#   suite      the whole test suite (pytest -n 8) on the GPU machine
# Everything is written to $OUT/session.log (default /tmp/avseg-cuda/session.log) and echoed, a summary last.
# The exit status is 0 when every step passed, 1 when one failed or timed out, 2 for no or an unknown stage.
# $PYTHON names the interpreter (default python3: the GPU machine's, with the carried packages).
set -u
if [ "$#" -eq 0 ]; then
  echo "usage: bash benchmarks/cuda_session.sh STAGE... (stages: quick env tests model predictor train annotate" \
       "render zeroshot graphs compile profile suite; see the header)" >&2
  exit 2
fi
OUT=${OUT:-/tmp/avseg-cuda}
mkdir -p "$OUT"
LOG="$OUT/session.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SUMMARY=()
FAILED=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "=== $name: $*" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || FAILED=1
  SUMMARY+=("$(printf '%-28s rc=%-3s %4ss' "$name" "$rc" "$(($(date +%s) - start))")")
  echo "=== $name rc=$rc" | tee -a "$LOG"
}

for stage in "$@"; do
  case $stage in
    env)
      step nvidia-smi 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
      step versions 60 "$PY" -c "import torch, torchvision, transformers, open_clip; print(torch.__version__, torchvision.__version__, transformers.__version__, open_clip.__version__, torch.cuda.get_device_name(), torch.backends.cudnn.version())"
      ;;
    tests)
      step test_cuda 420 "$PY" -m pytest -q -p no:cacheprovider -s tests/test_cuda.py
      ;;
    model)
      for amp in off bf16 fp16; do
        step "model-$amp" 240 "$PY" benchmarks/bench_model.py --configs r50 swinb --device cuda --amp "$amp" --warmup 3 --repeat 20
      done
      step model-r50-bf16-gather 120 "$PY" benchmarks/bench_model.py --configs r50 --device cuda --amp bf16 --sampling gather --warmup 3 --repeat 20
      step model-r50-stages 120 "$PY" benchmarks/bench_model.py --configs r50 --device cuda --amp fp16 --no-backward --stages --warmup 3 --repeat 20
      ;;
    predictor)
      step predictor-r50-fp16 240 "$PY" benchmarks/bench_predictor.py --config r50 --device cuda --amp fp16 --warmup 2 --repeat 10 --modes official crops3 crops1 gate0.5
      step predictor-r50-off 180 "$PY" benchmarks/bench_predictor.py --config r50 --device cuda --amp off --warmup 2 --repeat 10 --modes official crops3
      step predictor-swinb-fp16 240 "$PY" benchmarks/bench_predictor.py --config swinb --device cuda --amp fp16 --warmup 2 --repeat 5 --modes official crops3
      ;;
    train)
      step train-r50 420 "$PY" benchmarks/bench_train.py --config r50 --device cuda --amp off bf16 fp16 --iters 80 --skip 15 --workers 8 --videos 8
      ;;
    annotate)
      step annotate-r50-fp16 300 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --sizes 360 720 --seconds 10
      step annotate-r50-fp16-crops3 240 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --max-crops 3 --sizes 360 720 --seconds 10
      step annotate-r50-fp16-processes 300 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --render-workers processes --sizes 360 720 --seconds 10
      step annotate-r50-fp16-crops3-processes 240 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --max-crops 3 --render-workers processes --sizes 360 720 --seconds 10
      ;;
    render)
      # no GPU needed: how much of the rendering overlaps a GIL-bound predictor on this host's cores
      for kind in threads processes; do
        step "render-io-$kind" 120 "$PY" benchmarks/bench_annotate.py --sizes 360 720 --seconds 8 --render-workers "$kind"
        step "render-busy16-$kind" 120 "$PY" benchmarks/bench_annotate.py --sizes 360 720 --seconds 8 --fake-busy-ms 16 --render-workers "$kind"
      done
      ;;
    zeroshot)
      step zeroshot-360p 240 "$PY" benchmarks/bench_zeroshot.py --device cuda --size 640x360 --clips 2
      step zeroshot-720p 240 "$PY" benchmarks/bench_zeroshot.py --device cuda --size 1280x720 --clips 2
      ;;
    quick)
      step quick-tests 150 "$PY" -m pytest -q -p no:cacheprovider -s tests/test_cuda.py -k "graph or wait or pinned or kept or fused or predict_clips or paint"
      step quick-train-r50 150 "$PY" benchmarks/bench_train.py --config r50 --device cuda --amp off --iters 50 --skip 15 --workers 8 --videos 8
      step quick-predictor-r50 180 "$PY" benchmarks/bench_predictor.py --config r50 --device cuda --amp fp16 --warmup 2 --repeat 5 --modes official official+pipelined official+graphs official+graphs+pipelined crops3 crops3+pipelined crops3+graphs
      step quick-annotate-360p 120 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --max-crops 3 --cuda-graphs --render-workers processes --sizes 360 --seconds 10
      step quick-profile 120 "$PY" benchmarks/profile_cuda.py --device cuda --amp fp16 --parts predictor --clips 5
      ;;
    graphs)
      step test_cuda_graphs 300 "$PY" -m pytest -q -p no:cacheprovider -s tests/test_cuda.py -k "graph or wait"
      for runner in eager graphs; do
        step "model-r50-fp16-$runner" 150 "$PY" benchmarks/bench_model.py --configs r50 --device cuda --amp fp16 --no-backward --runner "$runner" --warmup 3 --repeat 20
      done
      step predictor-r50-fp16-graphs 300 "$PY" benchmarks/bench_predictor.py --config r50 --device cuda --amp fp16 --warmup 2 --repeat 10 --modes official official+graphs crops3 crops3+graphs
      step annotate-r50-fp16-graphs 300 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --cuda-graphs --sizes 360 --seconds 10
      step annotate-r50-fp16-crops3-graphs 240 "$PY" benchmarks/bench_annotate.py --random-weights r50 --device cuda --amp fp16 --max-crops 3 --cuda-graphs --sizes 360 720 --seconds 10
      ;;
    compile)
      for runner in compile compile-reduce-overhead; do
        step "model-r50-fp16-$runner" 420 "$PY" benchmarks/bench_model.py --configs r50 --device cuda --amp fp16 --runner "$runner" --warmup 3 --repeat 20
      done
      ;;
    profile)
      step profile 300 "$PY" benchmarks/profile_cuda.py --device cuda --amp fp16 --parts predictor clip train
      ;;
    suite)
      step suite "${SUITE_LIMIT:-480}" "$PY" -m pytest -q -p no:cacheprovider -n "${SUITE_WORKERS:-8}" tests
      ;;
    *)
      echo "unknown stage $stage" >&2
      exit 2
      ;;
  esac
done

echo "=== summary" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
exit "$FAILED"
