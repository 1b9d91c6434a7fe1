#!/usr/bin/env bash
# Instructions per MAC of each measured window of a kernel-check firmware under qemu + insncount.
# Usage: measure.sh ELF [qemu machine args...]; needs /work/target-micro/libinsncount.so or
# INSNCOUNT=path (build: gcc -shared -fPIC -O2 -o libinsncount.so shared/tools/insncount/insncount.c).
set -euo pipefail
elf=$1
shift
plugin=${INSNCOUNT:-/work/target-micro/libinsncount.so}
machine=("$@")
[ ${#machine[@]} -gt 0 ] || machine=(-cpu cortex-m4 -machine mps2-an386)
addr() { arm-none-eabi-nm "$elf" | awk -v s="$1" '$3 == s { print $1 }'; }
begin=$(addr perch_bench_begin)
end=$(addr perch_bench_end)
log=$(mktemp)
qemu-system-arm "${machine[@]}" -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -icount shift=0 \
  -plugin "$plugin,begin=$begin,end=$end" -kernel "$elf" >"$log" 2>&1
paste <(grep '^window:' "$log") <(grep 'insncount: window' "$log" | awk '{ print $NF }') |
  awk -F'\t' '{ n = split($1, f, " "); macs = f[n]; sub(/^window: /, "", $1); sub(/ macs [0-9]+$/, "", $1);
                printf "%-44s %10d MACs %11d insns %6.2f insns/MAC\n", $1, macs, $2, $2 / macs }'
grep 'insncount: total' "$log"
rm -f "$log"
