#!/usr/bin/env bash
# Installs the offline GPU kit built by scripts/gpu_kit.sh (it travels as install.sh in every part folder):
#
#   bash install.sh STASH SITE [PYTHON]
#
# STASH holds the parts (kit.tar.xz.partNN, gathered from the part folders); this script's own folder holds
# SHA256SUMS and MANIFEST. Every part's sha256 is checked first (a missing or damaged part is named, nothing is
# installed); then the parts are joined and unpacked, the wheels rebuilt, and installed with
# `PYTHON -m pip install --no-index --no-deps --target SITE` (PYTHON default python3). Data carried in the kit
# (FSDD, for the check) is left in STASH/data. Needs nothing from a network.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STASH=${1:-}
SITE=${2:-}
PYTHON=${3:-${PYTHON:-python3}}
die() { echo "gpu kit install: FAILED: $*" >&2; exit 1; }

[ -n "$STASH" ] && [ -n "$SITE" ] || die "usage: bash install.sh STASH SITE [PYTHON]"
[ -d "$STASH" ] || die "STASH $STASH is not a folder: copy every part folder's kit.tar.xz.part* into it"
[ -f "$HERE/SHA256SUMS" ] || die "SHA256SUMS is missing beside install.sh"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip: pass a Python with pip as the third argument"

missing=()
while read -r sum name; do
    if [ ! -f "$STASH/$name" ]; then
        missing+=("$name")
    elif [ "$(sha256sum "$STASH/$name" | cut -d' ' -f1)" != "$sum" ]; then
        die "$STASH/$name is damaged (sha256 differs from SHA256SUMS): carry that part again"
    fi
done <"$HERE/SHA256SUMS"
[ ${#missing[@]} -eq 0 ] || die "missing part(s) in $STASH: ${missing[*]} (the machine may have gone cold between calls: carry them again)"
echo "gpu kit install: $(wc -l <"$HERE/SHA256SUMS") parts verified"

WORK=$STASH/unpacked
rm -rf "$WORK" "$STASH/wheels"
mkdir -p "$WORK" "$STASH/wheels"
cut -d' ' -f3 "$HERE/SHA256SUMS" | sed "s|^|$STASH/|" | xargs cat | xz -dc | tar -C "$WORK" -xf -
while read -r wheel; do
    name=${wheel%.whl}
    [ -d "$WORK/$name" ] || die "$wheel is listed in MANIFEST but not in the parts"
    # A wheel is a zip of its tree; stored, not deflated: it is unpacked again at once.
    (cd "$WORK/$name" && "$PYTHON" - "$STASH/wheels/$wheel" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    for root, _, files in os.walk("."):
        for f in sorted(files):
            path = os.path.join(root, f)
            z.write(path, os.path.relpath(path, "."))
EOF
    )
done <"$HERE/MANIFEST"
mkdir -p "$SITE"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STASH"/wheels/*.whl
if [ -d "$WORK/data" ]; then
    rm -rf "$STASH/data"
    mv "$WORK/data" "$STASH/data"
    echo "gpu kit install: data in $STASH/data"
fi
rm -rf "$WORK" "$STASH/wheels"
echo "gpu kit install: $(wc -l <"$HERE/MANIFEST") wheels installed into $SITE (PYTHONPATH=$SITE)"
