#!/usr/bin/env bash
# cargo's runner for the board app under qemu (firmware/.cargo/config.toml): qemu-run.sh ELF
#
# The ELF decides the board: linked for flash at 0x0800_0000 (an STM32 layout: the stm32f405 or
# stm32f411 feature) it runs on netduinoplus2 (an STM32F405); otherwise the core decides: a
# Cortex-M4 build (Armv7E-M) runs on mps2-an386, a thumbv6m build on mps2-an385 (Cortex-M3 core:
# qemu has no M0 board; the code is Thumb-1 only), an Armv8-M mainline build on mps2-an505
# (Cortex-M33). PERCH_QEMU_MACHINE="-cpu ... -machine ..." overrides the choice.
#
# The firmware's exit status (semihosting EXIT_SUCCESS / EXIT_FAILURE) is qemu's and this script's:
# it is the test verdict. Output is defmt over semihosting, decoded by `defmt-print` when installed
# (`cargo install defmt-print`), else saved raw next to the ELF (decode later with
# `defmt-print -e ELF < ELF.defmt`). `-icount shift=0` makes runs deterministic; a timeout
# (PERCH_QEMU_TIMEOUT, 120 s) turns a hang into a failure (exit 124).
set -uo pipefail
elf=$1
if [ -n "${PERCH_QEMU_MACHINE:-}" ]; then
  read -ra machine <<<"$PERCH_QEMU_MACHINE"
elif arm-none-eabi-readelf -S "$elf" | grep -q '\.vector_table  *PROGBITS  *08000000'; then
  machine=(-machine netduinoplus2)
else
  case $(arm-none-eabi-readelf -A "$elf" | awk '/Tag_CPU_arch:/ { print $2 }') in
    v7E-M) machine=(-cpu cortex-m4 -machine mps2-an386) ;;
    v6-M | v6S-M | v7-M) machine=(-cpu cortex-m3 -machine mps2-an385) ;;
    v8-M.mainline) machine=(-cpu cortex-m33 -machine mps2-an505) ;;
    *) echo "qemu-run: no qemu board for $elf's core; set PERCH_QEMU_MACHINE" >&2; exit 2 ;;
  esac
fi
qemu=(timeout "${PERCH_QEMU_TIMEOUT:-120}" qemu-system-arm "${machine[@]}" -nographic -monitor none
  -serial none -semihosting-config enable=on,target=native -icount shift=0 -kernel "$elf")
if command -v defmt-print >/dev/null; then
  "${qemu[@]}" | defmt-print -e "$elf"
  status=$?
else
  "${qemu[@]}" >"$elf.defmt"
  status=$?
  echo "qemu-run: defmt-print not installed; raw defmt log in $elf.defmt (cargo install defmt-print)" >&2
fi
# In PERCH_NO_PANIC=warn mode the link went on despite panic sites in the inference path: say so.
if [ "${PERCH_NO_PANIC:-deny}" = warn ] && arm-none-eabi-nm -C "$elf" | grep ' perch_micro::interpreter::run$' >/dev/null; then
  report=$("$(dirname "$0")/no-panic.sh" "$elf" 2>&1) ||
    echo "qemu-run: warning: $(grep -c '^ *[0-9a-f]*:' <<<"$report") panic call sites reachable from inference (app/no-panic.sh $elf lists them)" >&2
fi
echo "qemu-run: ${machine[*]}: exit status $status ($([ "$status" = 0 ] && echo PASS || echo FAIL))" >&2
exit "$status"
