#!/usr/bin/env python3
"""Instructions per inference by function, from two insnprof dumps of `perch-run bench --runs A` and
`--runs B` (plan load and optimization cancel out in the difference).

    insnprof.py BIN TB_A TB_B RUNS_DIFFERENCE [LOAD_BASE_HEX] [TOP]

LOAD_BASE is where qemu-user loads the PIE binary (qemu-aarch64: 5500000000, the default;
qemu-arm: 40000000). Blocks outside the binary (libc, the dynamic loader) are counted as one line.
"""
import bisect
import collections
import subprocess
import sys


def symbols(binary):
    syms = []
    nm = subprocess.run(["nm", "-C", "--defined-only", binary], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        parts = line.split(" ", 2)
        # ARM and AArch64 mapping symbols ($a, $t, $x, $d) mark code kinds, not functions.
        if len(parts) == 3 and parts[1] in "tTwW" and not parts[2].startswith("$"):
            syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    return syms


def by_function(path, syms, base):
    addrs = [a for a, _ in syms]
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            va, n, k = line.split()
            off = int(va, 16) - base
            if 0 <= off < 0x10000000:
                i = bisect.bisect_right(addrs, off) - 1
                name = syms[i][1] if i >= 0 else "?"
            else:
                name = "[outside the binary: libc, ld.so]"
            counts[name] += int(n) * int(k)
    return counts


def main():
    binary, a, b, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    base = int(sys.argv[5], 16) if len(sys.argv) > 5 else 0x5500000000
    top = int(sys.argv[6]) if len(sys.argv) > 6 else 30
    syms = symbols(binary)
    first, second = by_function(a, syms, base), by_function(b, syms, base)
    per = {k: (second[k] - first.get(k, 0)) / runs for k in second}
    total = sum(per.values())
    print(f"total per inference: {total:,.0f}")
    for name, v in sorted(per.items(), key=lambda x: -x[1])[:top]:
        if v <= 0:
            break
        print(f"{v:14,.0f} {100 * v / total:5.1f}%  {name[:150]}")


if __name__ == "__main__":
    main()
