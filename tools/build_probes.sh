#!/bin/sh
# Rebuild the probe programs in mpcontainer_magics/probes/ from tools/probes/*.s.
#
# Each is a few instructions that exit 0 through a raw system call (the amd64-v2/v3/v4 and
# arm-v5/v6/v7 ones first execute an instruction of that level: SIGILL means the CPU or
# emulator lacks it), assembled and linked static without libc, stripped: a few hundred
# bytes each. engines/probe.py runs them in containers on an engine to learn what it runs,
# as BuildKit's util/archutil does. The built files are committed, so installing the
# package needs no toolchain.
#
# Needs Debian 12's cross binutils (as root):
#   apt-get install binutils-x86-64-linux-gnu binutils-i686-linux-gnu \
#     binutils-aarch64-linux-gnu binutils-arm-linux-gnueabi binutils-s390x-linux-gnu \
#     binutils-powerpc64le-linux-gnu binutils-riscv64-linux-gnu binutils-mips64el-linux-gnuabi64
# Run from anywhere: sh tools/build_probes.sh  (then commit mpcontainer_magics/probes/)
# Debian 12 has no loongarch64 binutils, so there is no loong64 probe.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/../mpcontainer_magics/probes"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME TRIPLET [AS-FLAGS...]: tools/probes/NAME.s -> mpcontainer_magics/probes/NAME
build() {
    name=$1 triplet=$2
    shift 2
    "$triplet-as" --noexecstack "$@" -o "$work/$name.o" "$here/probes/$name.s"
    # -n (no page alignment) and no build ID keep the file to a few hundred bytes.
    "$triplet-ld" -static -n -s --build-id=none -e _start -o "$out/$name" "$work/$name.o"
    chmod 0755 "$out/$name"
}

mkdir -p "$out"
for name in amd64 amd64-v2 amd64-v3 amd64-v4 runner-amd64; do
    build "$name" x86_64-linux-gnu
done
build 386 i686-linux-gnu --32
build arm64 aarch64-linux-gnu
build runner-arm64 aarch64-linux-gnu
build arm-v5 arm-linux-gnueabi -march=armv5te
build arm-v6 arm-linux-gnueabi -march=armv6
build arm-v7 arm-linux-gnueabi -march=armv7-a
build arm-aarch32 arm-linux-gnueabi -march=armv5te
build s390x s390x-linux-gnu
build ppc64le powerpc64le-linux-gnu
build riscv64 riscv64-linux-gnu
build mips64le mips64el-linux-gnuabi64
ls -l "$out"
