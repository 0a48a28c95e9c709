#!/usr/bin/env bash
# What tools/device_check.sh needs on the device machine and that machine lacks (it has no network):
# kornia + kornia-rs wheels for its Python 3.12 in .whl/ (the augmentation of distill/data/batches.py), and the
# datasets in .devdata/ (../shared/data does not travel). Both folders are git-ignored; name them in `carry`.
set -euo pipefail
mkdir -p .whl .devdata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl kornia==0.9.0 kornia_rs==0.2.0
cp -r ../shared/data/cifar10-jpeg.tar.gz ../shared/data/mnist ../shared/data/notmnist .devdata/
du -sh .whl .devdata
