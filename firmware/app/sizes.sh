#!/usr/bin/env bash
# Flash and RAM of a board app ELF, from its sections (arm-none-eabi-size -A) and symbols:
#   app/sizes.sh ELF
# flash = .vector_table + .text + .rodata + .data (its initial values); the plan and the test
# vectors are in .rodata. RAM = .data + .bss + .uninit (the arena is in .bss) + the stack, which
# the app measures at run time (it prints the high-water mark).
set -euo pipefail
elf=$1
sec() { arm-none-eabi-size -A "$elf" | awk -v s="$1" '$1 == s { print $2 } END { }' | head -1; }
sym() {
  local hex
  hex=$(arm-none-eabi-nm -S -C "$elf" | awk -v s="$1" 'index($0, s) { print $2; exit }')
  echo $((16#${hex:-0}))
}
vt=$(sec .vector_table); text=$(sec .text); rodata=$(sec .rodata); data=$(sec .data)
bss=$(sec .bss); uninit=$(sec .uninit)
plan=$(sym 'perch_app::model::PLAN::'); vectors=$(sym 'perch_app::model::VECTORS::')
arena=$(sym 'ARENA')
flash=$((vt + text + rodata + data))
printf 'flash %7d bytes  (.vector_table %d, .text %d, .rodata %d incl. plan %d and test vectors %d, .data %d)\n' \
  "$flash" "$vt" "$text" "$rodata" "$plan" "$vectors" "$data"
printf 'RAM   %7d bytes + stack  (.data %d, .bss %d incl. arena %d, .uninit %d)\n' \
  "$((data + bss + ${uninit:-0}))" "$data" "$bss" "$arena" "${uninit:-0}"
