/*
 * What one rate-limit check costs (limits.ts: RateLimiter.allow), the price each
 * limited control frame pays (ARP and echo to the gateway, DHCP, DNS, the
 * router's ICMP errors; never a forwarded frame):
 *   npx vitest bench --project unit --run packages/nat/src/limits.bench.ts
 * Each iteration checks CHECKS frames spread over 64 ports, the clock advancing
 * 1 µs per frame, so buckets refill, drain and drop as under a flood.
 * Not part of `vitest run`: the unit project only collects *.test.ts.
 */
import { bench, describe } from 'vitest';
import { LIMIT, RateLimiter } from './limits.js';

const CHECKS = 10_000;
const ports = Array.from({ length: 64 }, (_, i) => `tap${i}`);
const limiter = new RateLimiter({ arp: 100 });
let now = 0;
let passed = 0;

describe(`RateLimiter.allow, ${CHECKS} checks per iteration (divide the mean by ${CHECKS})`, () => {
  bench('allow(arp, port, now): 64 ports under a flood', () => {
    for (let i = 0; i < CHECKS; i++) {
      if (limiter.allow(LIMIT.arp, ports[i & 63], now)) passed++;
      now += 0.001;
    }
  });
  bench('allow() of a kind that is off (pps 0)', () => {
    for (let i = 0; i < CHECKS; i++) if (limiter.allow(LIMIT.dns, ports[i & 63], now)) passed++;
  });
});
