"""Medians per (operation, kind, mode) of tapio's rows, and their ratio to `sys` (the control)."""
import statistics
import sys
from collections import defaultdict


def summarize(lines):
    rows = defaultdict(list)
    for line in lines:
        f = line.rstrip("\n").split("\t")
        if len(f) < 11 or f[0] == "op" or line.startswith("#"):
            continue
        rows[(f[0], f[1], f[3])].append(f)
    out = []
    for (op, kind, mode), rs in rows.items():
        cpu = statistics.median(float(r[6]) for r in rs)
        wrk = statistics.median(float(r[9]) for r in rs)
        inl = statistics.median(float(r[10]) for r in rs)
        frames = statistics.median(int(r[4]) for r in rs)
        errors = sum(int(r[5]) for r in rs)
        machine = statistics.median(float(r[11]) for r in rs) if all(len(r) > 11 for r in rs) else -1
        out.append((op, kind, mode, cpu, wrk, inl, frames, errors, [float(r[6]) for r in rs], machine))
    base = {(o, k): c for o, k, m, c, *_ in out if m == "sys"}
    return out, base


def main(path):
    with open(path) as fh:
        out, base = summarize(fh)
    print("| op | kind | mode | CPU ns/frame (median) | rounds | ÷ sys | io-wq ns/frame | inline | machine busy ns/frame | frames | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for op, kind, mode, cpu, wrk, inl, frames, errors, each, machine in out:
        b = base.get((op, kind))
        ratio = f"{cpu / b:.3f}×" if b else "–"
        each_s = " / ".join(f"{x:.0f}" for x in each)
        inl_s = "–" if inl < 0 else f"{inl:.2f}"
        mach = "–" if machine < 0 else f"{machine:.0f}"
        print(f"| {op} | {kind} | {mode} | {cpu:.0f} | {each_s} | {ratio} | {wrk:.0f} | {inl_s} | {mach} | {frames:.0f} | {errors} |")


if __name__ == "__main__":
    main(sys.argv[1])
