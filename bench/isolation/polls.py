# The work a thread's event loop did between two polls, from
# `strace -tt -T -e trace=epoll_pwait,epoll_wait -p TID -o FILE` (bench/isolation/profile-scrape.sh -m polls):
# the time from one epoll call's return to the next call. For the daemon's main thread, the longest
# such gap is the longest a frame arriving on a TAP waited before the loop looked. strace stops the
# thread at every system call, so the gaps are inflated (renders read /proc files); compare builds
# measured the same way.
# Usage: python3 polls.py FILE
import re, sys
def t(s):
    h, m, x = s.split(':'); return int(h) * 3600 + int(m) * 60 + float(x)
prev_end = None; gaps = []
for line in open(sys.argv[1]):
    m = re.match(r'(\d+:\d+:\d+\.\d+) epoll_p?wait\(.*<(\d+\.\d+)>$', line.strip())
    if not m: continue
    start = t(m.group(1)); dur = float(m.group(2))
    if prev_end is not None: gaps.append((start - prev_end) * 1000)
    prev_end = start + dur
gaps.sort()
q = lambda p: gaps[min(len(gaps) - 1, int(round(p / 100 * (len(gaps) - 1))))]
over = lambda ms: [g for g in gaps if g > ms]
print(f"{len(gaps)} polls; work between polls: p50 {q(50):.3f} ms, p99 {q(99):.3f} ms, max {gaps[-1]:.3f} ms; "
      f"over 5 ms: {len(over(5))} ({sum(over(5)):.0f} ms in all), over 20 ms: {len(over(20))}; longest {[round(g, 1) for g in gaps[-6:]]}")
