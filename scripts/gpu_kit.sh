#!/usr/bin/env bash
# The offline GPU kit: what `scripts/gpu_check.sh` needs on a GPU machine that has Python, torch and onnx but no
# package index and a cap on what one transfer carries. Run here, where the registries are reachable:
#
#   scripts/gpu_kit.sh                          # for CPython 3.12, manylinux x86_64 (the lent GPU machine)
#   KIT_PYTHON=.venv/bin/python scripts/gpu_kit.sh     # for that interpreter's version (a local rehearsal)
#
# It writes the git-ignored folder KIT (default .gpu-kit/):
#   wheels/            the wheels, as downloaded (kept here only; they never travel)
#   p1/ p2/ ...        the wheels unpacked into one tar, xz-compressed, cut into parts of at most PART_MIB (60) MiB
#                      each, one part per folder: one folder is what one transfer carries
#   p1/install.sh      (in every part folder, with SHA256SUMS and MANIFEST) checks every part's sha256, joins
#                      them, rebuilds the wheels and installs them with pip --no-index --no-deps into a target
#   PLAN.md            which call carries which part, and the last call's command
#
# What the kit holds: onnxruntime-gpu at the version pyproject.toml pins (ORT_VERSION), librosa, soundfile, soxr,
# the typer this repository is tested with, what they need that the GPU machine lacks (KIT_PACKAGES), and FSDD
# (KIT_DATA), whose clips the check scores. Packages the machine already has (numpy, scipy, numba, scikit-learn,
# requests, msgpack, lazy-loader, ...) are not carried. Re-running replaces the kit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$REPO/.gpu-kit}
PART_MIB=${PART_MIB:-60}
XZ_LEVEL=${XZ_LEVEL:-6}  # 0-9: 6 packs the cp312 kit into the fewest parts; a rehearsal may trade size for time.
ORT_VERSION=${ORT_VERSION:-1.31.1}
PIP_PYTHON=${PIP_PYTHON:-$REPO/.venv/bin/python}  # Whose pip downloads (any pip >= 23 will do).
# The check's audio (FSDD, CC BY-SA 4.0, its README included) travels in the kit; KIT_DATA= (empty) leaves it out.
KIT_DATA=${KIT_DATA-$REPO/../shared/data/fsdd}

die() { echo "gpu kit: FAILED: $*" >&2; exit 1; }

[ -x "$PIP_PYTHON" ] || PIP_PYTHON=$(command -v python3) || die "no python3 to run pip: set PIP_PYTHON"
case "$PART_MIB" in ''|*[!0-9]*) die "PART_MIB=$PART_MIB: pass a whole number of MiB, e.g. 60";; esac
case "$XZ_LEVEL" in [0-9]) ;; *) die "XZ_LEVEL=$XZ_LEVEL: pass a digit 0-9";; esac
[ "$PART_MIB" -ge 1 ] || die "PART_MIB=$PART_MIB: pass at least 1"
if [ -n "${KIT_PYTHON:-}" ]; then  # The tag of a given interpreter (the rehearsal's), else the GPU machine's.
    read -r PYV ABI < <("$KIT_PYTHON" -c 'import sys; v = sys.version_info; print(f"{v[0]}.{v[1]}", f"cp{v[0]}{v[1]}")') \
        || die "KIT_PYTHON=$KIT_PYTHON does not run"
else
    PYV=3.12 ABI=cp312
fi
# audioread needs these backports from Python 3.13 on (the standard library dropped the modules).
BACKPORTS=$([ "${PYV#3.}" -ge 13 ] && echo "standard-aifc standard-sunau audioop-lts" || true)
# The command line runs on the typer it is tested with (the machine's own may predate it): the versions of
# typer, pydantic and pydantic-core that PIP_PYTHON's environment holds, which belong together.
PINNED=$("$PIP_PYTHON" -c 'import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("typer", "pydantic", "pydantic-core")))') \
    || die "$PIP_PYTHON lacks typer or pydantic: run 'make venv' or set PIP_PYTHON"
KIT_PACKAGES=${KIT_PACKAGES:-"onnxruntime-gpu==$ORT_VERSION librosa==0.11.0 soundfile soxr audioread pooch platformdirs decorator cffi pycparser $PINNED annotated-types typing-inspection $BACKPORTS"}
for tool in xz split sha256sum tar; do command -v "$tool" >/dev/null || die "$tool is missing"; done
[ -z "$KIT_DATA" ] || [ -d "$KIT_DATA/recordings" ] || die "KIT_DATA=$KIT_DATA holds no recordings/: point it at FSDD or set KIT_DATA= to leave it out"

rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/tree"
echo "gpu kit: downloading wheels for CPython $PYV (manylinux x86_64) into $KIT/wheels"
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
for package in $KIT_PACKAGES; do  # Each one alone: the one without a wheel for this Python is named.
    PIP_CONSTRAINT= "$PIP_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
        --implementation cp --abi "$ABI" --abi abi3 --abi none "${PLATFORMS[@]}" --platform any \
        -d "$KIT/wheels" "$package" || die "no wheel of $package for CPython $PYV manylinux x86_64"
done
ls "$KIT/wheels"/onnxruntime_gpu-"$ORT_VERSION"-*.whl >/dev/null 2>&1 || die "onnxruntime-gpu $ORT_VERSION was not downloaded"

echo "gpu kit: unpacking and compressing (xz -$XZ_LEVEL; a wheel is deflate-compressed, xz -6 takes a fifth off)"
for wheel in "$KIT/wheels"/*.whl; do
    name=$(basename "$wheel" .whl)
    mkdir -p "$KIT/tree/$name"
    "$PIP_PYTHON" -m zipfile -e "$wheel" "$KIT/tree/$name"
done
if [ -n "$KIT_DATA" ]; then
    mkdir -p "$KIT/tree/data/fsdd"
    cp -r "$KIT_DATA/recordings" "$KIT/tree/data/fsdd/"
    cp "$KIT_DATA"/*.md "$KIT_DATA"/*.csv "$KIT/tree/data/fsdd/" 2>/dev/null || true
fi
tar -C "$KIT/tree" -cf - . | xz "-$XZ_LEVEL" -T0 >"$KIT/kit.tar.xz"
rm -rf "$KIT/tree"

split -b "${PART_MIB}M" -d -a 2 "$KIT/kit.tar.xz" "$KIT/kit.tar.xz.part"
rm "$KIT/kit.tar.xz"
(cd "$KIT/wheels" && ls -1 *.whl) >"$KIT/MANIFEST"
(cd "$KIT" && sha256sum kit.tar.xz.part*) >"$KIT/SHA256SUMS"
n=0
for part in "$KIT"/kit.tar.xz.part*; do
    n=$((n + 1))
    mkdir -p "$KIT/p$n"
    mv "$part" "$KIT/p$n/"
    cp "$REPO/scripts/gpu_kit_install.sh" "$KIT/p$n/install.sh"
    cp "$KIT/SHA256SUMS" "$KIT/MANIFEST" "$KIT/p$n/"
done

cat >"$KIT/PLAN.md" <<EOF
# Carrying the GPU kit ($n parts, CPython $PYV)

Built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu_kit.sh: $(wc -l <"$KIT/MANIFEST") wheels
($(tr '\n' ' ' <"$KIT/MANIFEST")), $(du -cb "$KIT"/p*/kit.tar.xz.part* | tail -1 | cut -f1) bytes in $n parts of at most $PART_MIB MiB.
Each part folder also holds install.sh, SHA256SUMS and MANIFEST.

The GPU machine keeps files between calls only while it stays warm (about 30 s): make the calls back to back.
Each call below carries one folder (the device tool's \`carry\`) next to the repository (about 2 MB), and stashes
its part outside the repository, in /tmp/gpu-kit, where the next call finds it.

| call | carry | command |
|---|---|---|
EOF
for k in $(seq 1 $((n - 1))); do
    echo "| $k | \`.gpu-kit/p$k\` | \`mkdir -p /tmp/gpu-kit && cp .gpu-kit/p$k/kit.tar.xz.part* /tmp/gpu-kit/ && ls -l /tmp/gpu-kit\` |" >>"$KIT/PLAN.md"
done
cat >>"$KIT/PLAN.md" <<EOF
| $n | \`.gpu-kit/p$n\` | the last call, below |

The last call installs the kit (sha256 of every part first) and runs the check, which writes its JSON under \$OUT:

\`\`\`bash
mkdir -p /tmp/gpu-kit && cp .gpu-kit/p$n/kit.tar.xz.part* /tmp/gpu-kit/ && bash .gpu-kit/p$n/install.sh /tmp/gpu-kit /tmp/site python3 && PYTHON=python3 PYTHONPATH=/tmp/site OUT_JSON=\$OUT/gpu_check.json TOOLCHAIN_FSDD=/tmp/gpu-kit/data/fsdd bash scripts/gpu_check.sh
\`\`\`

Give that call a timeout of 600 s: installing takes about a minute, the check about 8. If the machine went cold
between calls (install.sh then names the missing parts), start again from call 1.
EOF
echo "gpu kit: $n parts in $KIT (p1..p$n, each <= $PART_MIB MiB); plan: $KIT/PLAN.md"
