#!/usr/bin/env bash
# Make sparse archives with this machine's GNU tar and bsdtar, for the test suite to read.
#
# Usage: make_local.sh OUTDIR
#
# OUTDIR gets:
#   src/sparse.bin   1 MiB + 1000 bytes: 8 data regions (7 of 4096 bytes at k*128 KiB,
#                    k = 0..6, and 1000 bytes at 1 MiB), 7 holes between them
#   src/holes.bin    64 KiB with no data at all (one hole)
#   gnutar-oldgnu.tar        tar -S --format=gnu           (type 'S', extension blocks)
#   gnutar-pax-0.0.tar       --format=posix --sparse-version=0.0 (GNU.sparse.offset/numbytes)
#   gnutar-pax-0.1.tar       --format=posix --sparse-version=0.1 (GNU.sparse.map)
#   gnutar-pax-1.0.tar       --format=posix --sparse-version=1.0 (map in the data blocks)
#   bsdtar-default.tar       bsdtar -c with its default format (restricted pax)
#   MANIFEST                 one line per archive made ("<archive> <tool version>"), and
#                            "SHA256 <file> <digest>" for each source file
#
# An archive whose tool is missing is left out (and named on stderr); the script fails only
# when it can make none. Nothing here is committed: the test suite runs it in a temporary
# folder. Whether a tool stores the files as sparse depends on the file system reporting the
# holes (SEEK_HOLE); GNU tar also finds all-zero blocks by reading, bsdtar does not.
set -euo pipefail

out=${1:?usage: make_local.sh OUTDIR}
mkdir -p "$out/src"
out=$(cd "$out" && pwd)
src=$out/src

# The source files, written with holes left by seeking (real holes on most file systems).
python3 - "$src" <<'PY'
import os, sys
src = sys.argv[1]
def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 8)) % 251 + 1 for i in range(n))  # never a zero
with open(os.path.join(src, "sparse.bin"), "wb") as f:
    for k in range(7):
        f.seek(k * 128 * 1024)
        f.write(pattern(k, 4096))
    f.seek(1024 * 1024)
    f.write(pattern(7, 1000))
with open(os.path.join(src, "holes.bin"), "wb") as f:
    f.truncate(64 * 1024)
PY
touch -d @1700000000 "$src/sparse.bin" "$src/holes.bin"
chmod 0644 "$src/sparse.bin" "$src/holes.bin"

: >"$out/MANIFEST"
made=0
# Owner, group, order and PAX header names are fixed; atime/ctime records are left out.
common=(--owner=0 --group=0 --numeric-owner --sort=name -C "$src")
pax=(--pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime')

if tar --version 2>/dev/null | grep -q 'GNU tar'; then
    gnu_version=$(tar --version | head -n 1)
    tar -c -S --format=gnu -f "$out/gnutar-oldgnu.tar" "${common[@]}" sparse.bin holes.bin
    echo "gnutar-oldgnu.tar $gnu_version" >>"$out/MANIFEST"
    for version in 0.0 0.1 1.0; do
        tar -c -S --format=posix --sparse-version="$version" "${pax[@]}" \
            -f "$out/gnutar-pax-$version.tar" "${common[@]}" sparse.bin holes.bin
        echo "gnutar-pax-$version.tar $gnu_version" >>"$out/MANIFEST"
    done
    made=$((made + 4))
else
    echo "make_local.sh: GNU tar not found: no gnutar-*.tar" >&2
fi

if command -v bsdtar >/dev/null 2>&1; then
    bsd_version=$(bsdtar --version | head -n 1)
    bsdtar -c -f "$out/bsdtar-default.tar" --uid 0 --gid 0 --uname '' --gname '' \
        -C "$src" sparse.bin holes.bin
    echo "bsdtar-default.tar $bsd_version" >>"$out/MANIFEST"
    made=$((made + 1))
else
    echo "make_local.sh: bsdtar not found: no bsdtar-default.tar" >&2
fi

for f in sparse.bin holes.bin; do
    echo "SHA256 $f $(sha256sum "$src/$f" | cut -d ' ' -f 1)" >>"$out/MANIFEST"
done

if [ "$made" -eq 0 ]; then
    echo "make_local.sh: neither GNU tar nor bsdtar is installed" >&2
    exit 1
fi
