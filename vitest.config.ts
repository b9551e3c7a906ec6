import { configDefaults, defineConfig } from 'vitest/config';

// Unit tests beside the code (pure logic) and integration tests under test/ (root,
// network namespaces, the real daemon). Integration files use only per-run names
// (test/helpers/run.ts PREFIX, free ports, temp dirs), so most of them run two at a
// time beside the unit tests: they spend their time waiting on clients and timers,
// not on the CPU. The files in SERIAL measure rates, latencies or recovery times, or
// load the machine on purpose (floods, 3000 connections, a QEMU guest); they run
// afterwards, one at a time, so they neither disturb nor are disturbed by others.
// demo.test runs scripts/lab.sh, whose uplink name is fixed (vswup0).
const SERIAL = [
  'bond', 'degrade', 'demo', 'evpn-gr', 'evpn-limit', 'evpn-mobility', 'fair', 'faults', 'fuzz', 'loop', 'nat-flood', 'qemu',
  'rate-limits', 'servers', 'traffic-rate', 'traffic-set', 'vxlan-ovs',
].map((f) => `test/${f}.test.ts`);

const integration = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...SERIAL],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
          ...integration,
        },
      },
      {
        test: {
          name: 'integration-serial',
          include: SERIAL,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          ...integration,
        },
      },
    ],
  },
});
