#!/usr/bin/env bash
# Proves that inference cannot panic: no call path from the inference entry (`perch_micro::run`)
# reaches a panic in the linked, optimized ELF. Run by app/linker.sh after every link of a binary
# that holds the entry, so a panic site in the inference path fails `cargo build`/`cargo run`.
#
# Usage: no-panic.sh ELF [ENTRY...]   (default entry: perch_micro::interpreter::run)
#
# The call graph is read from the disassembly (arm-none-eabi-objdump, from binutils-arm-none-eabi):
# every direct call or branch to another function (bl, b.w, conditional and compare branches) is an
# edge. A panic is any function named core::panicking::*, the panic handler (rust_begin_unwind), or
# one of core's panic shims (slice index, unwrap and expect failures). An indirect call or jump
# (`blx rN`, `bx rN` other than a return) on the path cannot be followed, so it fails the check too:
# the inference path has none, and one appearing needs a look. Exit status 1 prints each offending
# path, entry first; 2 means the entry is not in the ELF (inlined away: it must stay #[inline(never)]).
#
# Jump tables (a `match` compiled to a table) are branches inside one function, which adds no edge:
# every instruction of a reached function is already scanned. Thumb-2 (Cortex-M4) has TBB/TBH,
# which branch forward by offsets from a table right after them (LLVM emits them only for its own
# tables). Thumb-1 (thumbv6m) has no table branch, so LLVM writes `adr rT, TABLE; ldr rD, [rT, rI];
# mov pc, rD` with a table of code addresses after it: such a `mov pc` is accepted when the words
# from TABLE on that are Thumb code addresses all lie inside the same function, and the first word
# past them is no code address of another function (an entry leaving the function would be one;
# conservative: a literal-pool function pointer there fails too). Anything else is reported as an
# indirect jump.
set -euo pipefail
elf=$1
shift
entries=("$@")
[ ${#entries[@]} -gt 0 ] || entries=("perch_micro::interpreter::run")
objdump=${PERCH_OBJDUMP:-arm-none-eabi-objdump}
if ! command -v "$objdump" >/dev/null; then
  echo "no-panic: $objdump not found (apt-get install binutils-arm-none-eabi, or cargo xtask setup)" >&2
  exit 2
fi
"$objdump" -d -C --no-show-raw-insn "$elf" | awk -v entries="$(printf '%s\n' "${entries[@]}")" -v elf="$elf" '
# Hexadecimal to number (mawk has no strtonum); addresses are 32-bit, exact in a double.
function hex(s,   i, v) {
  s = tolower(s); sub(/^0x/, "", s); v = 0
  for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
  return v
}
function base(sym) { sub(/\+0x[0-9a-f]+$/, "", sym); return sym }
function is_panic(f) {
  return f ~ /^core::panicking::/ || f ~ /rust_begin_unwind$/ || f ~ /^core::slice::index::.*_fail$/ \
    || f ~ /^core::(option|result)::(unwrap|expect)_failed$/ || f ~ /^core::str::slice_error_fail/ \
    || f ~ /^core::cell::panic_already/
}
/^[0-9a-f]+ <.*>:$/ {
  cur = substr($0, index($0, "<") + 1); sub(/>:$/, "", cur); defined[cur] = 1
  nfun++; fstart[nfun] = hex($1); fidx[cur] = nfun; adr_reg = ""; ldr_reg = ""
  next
}
/^ +[0-9a-f]+:\t/ {
  n = split($0, part, "\t"); op = part[2]; args = (n >= 3) ? part[3] : ""
  at = part[1]; gsub(/[ :]/, "", at); at = hex(at); last_addr = at
  if (op == ".word") { word[at] = hex(args); next }
  # Thumb-1 jump table: adr rT, TABLE; ldr rD, [rT, rI]; mov pc, rD (checked in END).
  if (op == "add" && match($0, /\(adr r[0-9]+, [0-9a-f]+/)) {
    split(substr($0, RSTART + 5, RLENGTH - 5), adr, ", "); adr_reg = adr[1]; adr_at = hex(adr[2]); ldr_reg = ""
  } else if (op == "ldr" && adr_reg != "" && args ~ ("^r[0-9]+, \\[" adr_reg ", r[0-9]+\\]$")) {
    ldr_reg = substr(args, 1, index(args, ",") - 1)
  } else if (op == "mov" && ldr_reg != "" && args == ("pc, " ldr_reg)) {
    ntab++; tab_fun[ntab] = cur; tab_at[ntab] = adr_at; tab_site[ntab] = part[1] " " op " " args
    adr_reg = ""; ldr_reg = ""; next
  } else if (ldr_reg != "" && index(args, ldr_reg ",") == 1) {
    ldr_reg = ""  # the loaded address is overwritten before the jump
  }
  if (op ~ /^(bl|blx|b|b\.[nw]|cbn?z|b(eq|ne|cs|cc|hs|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)(\.[nw])?)$/ && args ~ /</) {
    t = substr(args, index(args, "<") + 1); sub(/>.*$/, "", t); t = base(t)
    if (t != cur && is_panic(t)) sites[cur] = sites[cur] "    " part[1] " " op " " t "\n"
    if (t != cur && !((cur, t) in seen)) { seen[cur, t] = 1; out[cur] = out[cur] SUBSEP t }
  } else if ((op ~ /^blx?$/ || op ~ /^bx$/) && args ~ /^r[0-9]+$|^(ip|sl|fp|sb)$/) {
    indirect[cur] = indirect[cur] "    " part[1] " " op " " args "\n"
  } else if (op ~ /^(ldr(\.w)?|mov)$/ && args ~ /^pc,/) {
    indirect[cur] = indirect[cur] "    " part[1] " " op " " args "\n"
  }
}
function path(f,   p) { p = f; while (f in parent) { f = parent[f]; p = f "\n    -> " p } return p }
# The function whose code holds address a (0 when none).
function fun_at(a,   lo, hi, mid) {
  if (nfun == 0 || a < fstart[1] || a > last_addr) return 0
  lo = 1; hi = nfun
  while (lo < hi) { mid = int((lo + hi + 1) / 2); if (fstart[mid] <= a) lo = mid; else hi = mid - 1 }
  return lo
}
END {
  for (i = 1; i <= ntab; i++) {
    f = fidx[tab_fun[i]]; count = 0
    for (a = tab_at[i]; (a in word) && word[a] % 2 == 1 && fun_at(word[a] - 1) == f; a += 4) count++
    if (count == 0 || ((a in word) && word[a] % 2 == 1 && fun_at(word[a] - 1) != 0))
      indirect[tab_fun[i]] = indirect[tab_fun[i]] "    " tab_site[i] " (a jump table whose targets are not all in the function)\n"
    else table_ok[tab_fun[i]]++
  }
  ne = split(entries, entry, "\n"); head = 0; tail = 0; bad = 0
  for (i = 1; i <= ne; i++) {
    if (entry[i] == "") continue
    if (!(entry[i] in defined)) {
      print "no-panic: " elf ": the inference entry `" entry[i] "` is not a function of its own (inlined? keep it #[inline(never)])" > "/dev/stderr"
      exit 2
    }
    queue[tail++] = entry[i]; reached[entry[i]] = 1
  }
  while (head < tail) {
    f = queue[head++]
    if (is_panic(f)) continue
    if (f in sites) { printf "no-panic: panic calls in the inference path:\n    %s\n%s", path(f), sites[f] > "/dev/stderr"; bad = 1 }
    tables += table_ok[f]
    if (f in indirect) { printf "no-panic: an indirect call or jump in the inference path (cannot be followed):\n    %s\n%s", path(f), indirect[f] > "/dev/stderr"; bad = 1 }
    m = split(out[f], next_, SUBSEP)
    for (j = 2; j <= m; j++) { t = next_[j]; if (!(t in reached)) { reached[t] = 1; parent[t] = f; queue[tail++] = t } }
  }
  if (bad) { print "no-panic: " elf ": inference can panic (see above); make each site fallible or prove it away" > "/dev/stderr"; exit 1 }
  printf "no-panic: %s: %d functions reachable from the inference entry, none panics", elf, tail > "/dev/stderr"
  if (tables) printf " (%d Thumb-1 jump tables, all inside their functions)", tables > "/dev/stderr"
  printf "\n" > "/dev/stderr"
}'
