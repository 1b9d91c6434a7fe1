#!/bin/sh
# Instructions per inference of a plan by function of perch-run, under qemu-user:
#   xtask/insnprof/insnprof.sh QEMU SYSROOT CPU PERCH_RUN PLAN RUNS_A RUNS_B [TOP]
# e.g. xtask/insnprof/insnprof.sh qemu-aarch64 /usr/aarch64-linux-gnu cortex-a76 \
#        target/aarch64-unknown-linux-gnu/release/perch-run target/bench-int8/mobilenet-v2.int8-perch.perch 1 3
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
q=$1 root=$2 cpu=$3 bin=$4 plan=$5 a=$6 b=$7 top=${8:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -shared -fPIC -O2 -o "$work/libinsnprof.so" "$dir/insnprof.c"
for n in "$a" "$b"; do
    TRACT_CPU_ARM32_NEON=true "$q" -cpu "$cpu" -L "$root" -plugin "$work/libinsnprof.so,out=$work/tb$n.txt" \
        "$bin" bench --plan "$plan" --runs "$n" --warmup 0 --no-cold-start --json >/dev/null
done
base=5500000000
[ "$q" = qemu-arm ] && base=40000000
python3 "$dir/insnprof.py" "$bin" "$work/tb$a.txt" "$work/tb$b.txt" $((b - a)) "$base" "$top"
