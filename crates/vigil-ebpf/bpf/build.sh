#!/usr/bin/env bash
# Rebuilds vigil.bpf.o from vigil.bpf.c, byte for byte reproducibly: same
# clang (Debian's clang 14), same vmlinux.h, build paths mapped away, DWARF
# stripped (BTF and CO-RE relocations stay). CI runs this and compares with
# the committed object, so the object always comes from the source beside it.
#   VMLINUX_H   the kernel type header (default: ../shared/kernel/vmlinux-*.h
#               beside the repository; or `bpftool btf dump file
#               /sys/kernel/btf/vmlinux format c` of any BTF kernel — CO-RE
#               relocates at load time, but a different header gives a
#               different object)
#   OUT         where to write (default: vigil.bpf.o beside this script)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
vmlinux="${VMLINUX_H:-$(ls "$repo"/../shared/kernel/vmlinux-*.h 2>/dev/null | head -n 1)}"
if [ -z "$vmlinux" ] || [ ! -f "$vmlinux" ]; then
  echo "no vmlinux.h: set VMLINUX_H (see this script's header)" >&2
  exit 1
fi
out="${OUT:-$here/vigil.bpf.o}"
inc="$(mktemp -d)"
trap 'rm -rf "$inc"' EXIT
cp "$vmlinux" "$inc/vmlinux.h"
cd "$here"
clang -O2 -g -target bpf -D__TARGET_ARCH_x86 \
  -fdebug-compilation-dir=. -ffile-prefix-map="$here"=. -ffile-prefix-map="$inc"=include \
  -fno-ident \
  -I"$inc" -I/usr/include/x86_64-linux-gnu \
  -Wall -Werror \
  -c vigil.bpf.c -o "$out.tmp"
llvm-strip -g "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -c1-16))"
