#!/usr/bin/env python3
"""Checks bench/tcp's arithmetic on synthetic input: python3 bench/tcp/tcp_test.py"""
import os
import subprocess
import sys
import tempfile
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import split  # noqa: E402

SCRIPT = """node  7305/7305
\tffffffff8163d93b get_page_from_freelist ([kernel.kallsyms])
\tffffffff81df8f76 tun_get_user ([kernel.kallsyms])
\tffffffff81dfa6b7 tun_chr_write_iter ([kernel.kallsyms])
\t           fde9d __GI___writev (/usr/lib/x86_64-linux-gnu/libc.so.6)

node  7305/7305
\tffffffff81e00000 tcp_rcv_established ([kernel.kallsyms])
\tffffffff81e00001 tcp_v4_rcv ([kernel.kallsyms])
\tffffffff81e00002 netif_receive_skb ([kernel.kallsyms])
\tffffffff81df8f76 tun_get_user ([kernel.kallsyms])
\tffffffff81dfa6b7 tun_chr_write_iter ([kernel.kallsyms])

node  7305/7305
\tffffffff81e00003 _copy_to_iter ([kernel.kallsyms])
\tffffffff81e00004 tun_do_read ([kernel.kallsyms])

node  7305/7305
\tffffffff81e00005 finish_task_switch.isra.0 ([kernel.kallsyms])
\tffffffff81e00006 schedule ([kernel.kallsyms])
\t           aaaa epoll_pwait (/usr/lib/x86_64-linux-gnu/libc.so.6)

node  7305/7305
\t    7f8ec00ddc69 [unknown] (/tmp/perf-7305.map)
\t          c494db v8::internal::(anonymous namespace)::Invoke (/usr/bin/node)

node  7305/7305
\tffffffff81e00007 kmem_cache_free ([kernel.kallsyms])
\tffffffff81e00008 do_syscall_64 ([kernel.kallsyms])
"""


class Split(unittest.TestCase):
    def test_classes(self):
        classes, total = split.split(SCRIPT.splitlines(keepends=True))
        self.assertEqual(total, 6)
        self.assertEqual(classes['write: copy+alloc'], 1)
        self.assertEqual(classes['write: VM stack (IP/TCP rx, wakeups)'], 1)
        self.assertEqual(classes['read: copy+free'], 1)
        self.assertEqual(classes['sched/epoll'], 1)
        self.assertEqual(classes['user (JS, V8, libuv, addon)'], 1)
        self.assertEqual(classes['other kernel'], 1)


class Ab(unittest.TestCase):
    def test_paired_ratios(self):
        rows = ['round\ttopo\tmetric\tvalue', '0\tmeta\tloadavg_start\t1 1 1']
        for r, a, b in ((1, 10.0, 8.0), (2, 9.0, 10.0), (3, 12.0, 10.0)):
            rows += [f'{r}\tours\ttcp_gbps\t{a}', f'{r}\tbase\ttcp_gbps\t{b}',
                     f'{r}\tours\ttcp_sw_cpu_s\t2.0', f'{r}\tbase\ttcp_sw_cpu_s\t2.0']
        rows.append('4\tours\ttcp_gbps\t99')  # no base in round 4: not paired
        with tempfile.NamedTemporaryFile('w', suffix='.tsv', delete=False) as f:
            f.write('\n'.join(rows) + '\n')
        try:
            out = subprocess.run([sys.executable, os.path.join(here, 'ab.py'), f.name, 'ours', 'base'],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            os.unlink(f.name)
        line = next(l for l in out.splitlines() if 'tcp_gbps' in l)
        self.assertIn('per round 1.25 0.90 1.20', line)
        self.assertIn('median 1.200', line)
        self.assertIn('geomean 1.105', line)  # (1.25 * 0.9 * 1.2) ** (1/3) = 1.35 ** (1/3)
        self.assertIn('ours above in 2/3', line)
        cpu = next(l for l in out.splitlines() if 'cpu_s_per_gbit' in l)
        self.assertIn('per round 0.80 1.11 0.83', cpu)


if __name__ == '__main__':
    unittest.main()
