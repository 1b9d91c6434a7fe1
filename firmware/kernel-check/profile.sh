#!/usr/bin/env bash
# Where one measured window's instructions go: builds `measure` with only window N and counts
# instructions inside the given functions. Usage: profile.sh N 'fn name regex'...
set -euo pipefail
n=$1
shift
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-micro}
PERCH_MEASURE_ONLY=$n cargo build --release --bin measure -q
elf=$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/measure
args=""
i=0
for f in "$@"; do
  range=$( (arm-none-eabi-nm -S -C "$elf" | grep -E "$f" || true) | head -1 | python3 -c "import sys; w=sys.stdin.read().split(); print(f'{int(w[0],16):x}:{int(w[0],16)+int(w[1],16):x}' if len(w) > 1 else '')")
  if [ -z "$range" ]; then echo "$f: not a function in this build (inlined?)"; continue; fi
  echo "r$i = $f"
  args="$args,r$i=$range"
  i=$((i+1))
done
./measure.sh "$elf" | grep -v "insncount: total"
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -icount shift=0 \
  -plugin "${INSNCOUNT:-/work/target-micro/libinsncount.so}$args" -kernel "$elf" 2>&1 | grep 'insncount: r'
