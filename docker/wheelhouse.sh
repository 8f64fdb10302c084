#!/usr/bin/env bash
# Download the wheels each image installs into .wheelhouse/<component>/, on the host.
#
# Containers here reach Debian's mirror but not PyPI (and an air-gapped site
# reaches neither), so the images install with `pip install --no-index
# --find-links` from wheels fetched beforehand by a machine that can: run
# this there, then carry .wheelhouse/ over with the source tree.
#
#   docker/wheelhouse.sh [server] [pytorch] [mxnet] [pytorch-gpu]   (default: the CPU three)
#
# Wheels only (--only-binary): what is downloaded is exactly what installs,
# with no compiler in the image. The host's Python must be 3.11 on x86_64
# (checked below), the ABI of both base images.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
dest=${WHEELHOUSE:-.wheelhouse}
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(server pytorch mxnet)

tag=$("$python" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
if [ "$tag" != "cpython311-x86_64" ]; then
  echo "wheelhouse: $python is $tag; the images need CPython 3.11 x86_64 wheels" >&2
  echo "wheelhouse: set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

for component in "${components[@]}"; do
  reqs=docker/requirements/$component.txt
  [ -f "$reqs" ] || { echo "wheelhouse: unknown component '$component' (no $reqs)" >&2; exit 1; }
  mkdir -p "$dest/$component"
  echo "wheelhouse: $component -> $dest/$component"
  "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --dest "$dest/$component" -r "$reqs" -r docker/requirements/build.txt
  du -sh "$dest/$component" | sed 's/^/wheelhouse: /'
done
