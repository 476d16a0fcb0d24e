#!/usr/bin/env bash
# The packages the lent GPU machine lacks, made ready to carry there (run here, in the repository root).
#
#   bash benchmarks/device_wheels.sh
#
# The device image (python 3.12, torch 2.11 cu130, torchvision, timm, transformers, typer, rich, scipy, numba,
# imageio, pillow...) has none of open_clip, torchvggish, moviepy, ffmpeg-python, PyAV, pycocotools or the
# ffmpeg binary, and nothing can be fetched there. One call carries at most 64 MiB, so they travel in two
# calls made back to back (the machine stays warm for 30 s after a call; /tmp/site survives between them):
#
#   .whl/      the small wheels + imageio_ffmpeg_py.tgz (imageio-ffmpeg without its 80 MB binary)
#   .whl_av/   PyAV (its wheel bundles the FFmpeg libraries)
#   .ffx/      ffmpeg.xz, the imageio-ffmpeg binary compressed with xz -9
#
# Call A, carry [".whl", ".whl_av"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl .whl_av/*.whl && tar xzf .whl/imageio_ffmpeg_py.tgz -C /tmp/site
# Call B, carry [".ffx"], then the work (each call starts a new shell, so export again):
#   export PYTHONPATH=/tmp/site; xz -d -T8 -c .ffx/ffmpeg.xz > /tmp/ffmpeg && chmod +x /tmp/ffmpeg &&
#   export IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg && bash benchmarks/cuda_session.sh quick
# Later calls on the same warm machine: `export PYTHONPATH=/tmp/site IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg`.
#
# The three folders are listed in .git/info/exclude (so git ignores them and they travel only when carried).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}

# Same versions as the project's tested environment; each one's own needs are named too (pip --no-deps).
SMALL=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5
  resampy==0.4.3 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  moviepy==2.2.1 decorator==5.3.2 proglog==0.1.12 python-dotenv==1.2.4
  ffmpeg-python==0.2.0 future==1.0.0
  pycocotools==2.0.11
)
AV=(av==18.1.0)
IMAGEIO_FFMPEG=imageio-ffmpeg==0.8.1

exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.whl_av/ /.ffx/; do
  grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done

download() {  # download DEST PACKAGE...: binary wheels for CPython 3.12 on x86-64 Linux
  local dest=$1
  shift
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$dest" "$@"
}

rm -rf .whl .whl_av .ffx
mkdir -p .whl .whl_av .ffx
download .whl "${SMALL[@]}"
"$PY" -m pip wheel -q --no-deps -w .whl torchvggish==0.2  # published as a source archive only (pure Python)
download .whl_av "${AV[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download "$work" "$IMAGEIO_FFMPEG"
mkdir -p "$work/site"
(cd "$work/site" && unzip -q "$work"/imageio_ffmpeg-*.whl)
binary=$(find "$work/site/imageio_ffmpeg/binaries" -name 'ffmpeg-*' -type f | head -n 1)
[ -n "$binary" ] || { echo "no ffmpeg binary inside the imageio-ffmpeg wheel" >&2; exit 1; }
xz -9 -T0 -c "$binary" >.ffx/ffmpeg.xz
rm -f "$binary"
tar czf .whl/imageio_ffmpeg_py.tgz -C "$work/site" .

du -sh .whl .whl_av .ffx
ls .whl .whl_av
