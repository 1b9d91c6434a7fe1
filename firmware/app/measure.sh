#!/usr/bin/env bash
# Executed instructions per MAC of the embedded plan, op by op and for the whole network, on qemu's
# Cortex-M4 (mps2-an386) with shared/tools/insncount. Run from firmware/:
#   app/measure.sh            builds the `measure` firmware (release, thumbv7em) and counts
# Builds the insncount plugin into $CARGO_TARGET_DIR if INSNCOUNT does not point at one.
# PERCH_PMC selects the plan as for the app. Pass --target thumbv6m-none-eabi to count the portable
# kernels on the Cortex-M3 board instead.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
triple=thumbv7em-none-eabihf
machine=(-cpu cortex-m4 -machine mps2-an386)
if [ "${1:-}" = "--target" ]; then
  triple=$2
  machine=(-cpu cortex-m3 -machine mps2-an385)
fi
cargo build --release --bin measure --target "$triple" -q
elf=$target_dir/$triple/release/measure
plugin=${INSNCOUNT:-$target_dir/libinsncount.so}
if [ ! -f "$plugin" ]; then
  gcc -shared -fPIC -O2 -o "$plugin" ../../shared/tools/insncount/insncount.c
fi
addr() { arm-none-eabi-nm "$elf" | awk -v s="$1" '$3 == s { print $1 }'; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
qemu-system-arm "${machine[@]}" -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -icount shift=0 \
  -plugin "$plugin,begin=$(addr perch_bench_begin),end=$(addr perch_bench_end)" \
  -kernel "$elf" 2>"$log" >/dev/null
printf '%-48s %10s %12s %10s\n' window MACs instructions insns/MAC
paste <(grep '^window:' "$log") <(grep 'insncount: window' "$log" | awk '{ print $NF }') |
  awk -F'\t' '{ n = split($1, f, " "); macs = f[n]; w = $1; sub(/^window: /, "", w); sub(/ macs [0-9]+$/, "", w);
                if (macs > 0) printf "%-48s %10d %12d %10.2f\n", w, macs, $2, $2 / macs;
                else printf "%-48s %10s %12d %10s\n", w, "-", $2, "-" }'
