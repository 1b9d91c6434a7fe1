#!/usr/bin/env bash
# The firmware's linker (firmware/.cargo/config.toml): flip-link, always. It puts the stack below
# the statics, so an overflow faults at the bottom of RAM instead of silently corrupting them.
# `cargo xtask setup` (and test-firmware) install it; by hand: `cargo install flip-link --locked`.
#
# After the link, a binary that holds the inference entry (perch_micro::interpreter::run) is
# checked by no-panic.sh for panics reachable from inference. PERCH_NO_PANIC=deny (the default)
# fails the link on one, with the call path and addresses, and removes the ELF; warn writes the
# report beside the ELF (ELF.no-panic.txt) and lets the link go on (while investigating); off skips
# it.
#
# rustc puts its rust-lld on the PATH of the linker it starts and, as for any linker name it does
# not know, passes `-flavor gnu` first (not to one named `link`: hence this file's name).
set -euo pipefail
here=$(dirname "$0")
if ! command -v flip-link >/dev/null; then
  echo "error: flip-link is not installed: run \`cargo install flip-link --locked\` (or \`cargo xtask setup\`)" >&2
  exit 1
fi
flip-link "$@"
out=
prev=
for arg in "$@"; do
  [ "$prev" = -o ] && out=$arg
  prev=$arg
done
if [ -n "$out" ] && arm-none-eabi-nm -C "$out" 2>/dev/null | grep ' perch_micro::interpreter::run$' >/dev/null; then
  case ${PERCH_NO_PANIC:-deny} in
    # No unchecked ELF is left behind for a runner to pick up.
    deny) "$here/no-panic.sh" "$out" || { rm -f "$out"; exit 1; } ;;
    # The report, and the link goes on.
    warn) "$here/no-panic.sh" "$out" 2>"$out.no-panic.txt" || echo "warning: no-panic: panic sites reachable from inference: see $out.no-panic.txt (PERCH_NO_PANIC=deny fails the link)" >&2 ;;
    off) ;;
    *) echo "error: PERCH_NO_PANIC is deny, warn or off, not ${PERCH_NO_PANIC}" >&2; exit 1 ;;
  esac
fi
