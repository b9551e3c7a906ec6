/*
 * Bonds in a real Bridge with in-memory members (a carrier switch per member, a
 * fake clock driving `tick`): active-backup sends and receives on one member and
 * fails over with a RARP per MAC behind the bond; balance-slb spreads source MACs,
 * takes floods from the primary only, drops reflections of its own frames and
 * rebalances by load; lacp carries data only on distributing members against a
 * simulated partner (lacp.ts) and never bridges a LACPDU; malformed LACPDUs and a
 * vanished member are counted and the rest goes on.
 */
import { describe, expect, it } from 'vitest';
import { Bridge } from './bridge.js';
import { BondIo, type BondEvent, type BondMode, type BondOptions, BUCKETS, bondBucket } from './bond.js';
import { Lacp } from './lacp.js';
import type { PortIo, PortKind, PortRx } from './port.js';
import { TestIo } from './testing/test-io.js';
import { readMac, writeMac } from './wire/ethernet.js';
import { LACP_FRAME_LEN, LACPDU_OK, newLacpduView, newLacpInfo, readLacpdu, writeLacpFrame } from './wire/lacp.js';

class Member implements PortIo {
  readonly kind: PortKind = 'attach';
  rx!: PortRx;
  sent: Uint8Array[] = [];
  closed = false;
  start(rx: PortRx): void { this.rx = rx; }
  send(buf: Uint8Array, off: number, len: number): number {
    this.sent.push(buf.slice(off, off + len));
    return len;
  }
  send2(a: Uint8Array, aoff: number, alen: number, b: Uint8Array, boff: number, blen: number): number {
    const f = new Uint8Array(alen + blen);
    f.set(a.subarray(aoff, aoff + alen));
    f.set(b.subarray(boff, boff + blen), alen);
    this.sent.push(f);
    return f.length;
  }
  close(): void { this.closed = true; }
  describe(): Record<string, string | number | boolean> { return {}; }
  inject(f: Uint8Array): void { this.rx.frame(f, 0, f.length); }
  take(): Uint8Array[] { const s = this.sent; this.sent = []; return s; }
  data(): Uint8Array[] { return this.take().filter((f) => !(f[12] === 0x88 && f[13] === 0x09)); }
}

function eth(dst: number, src: number, type = 0x0800, n = 46): Uint8Array {
  const f = new Uint8Array(14 + n);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f[12] = type >> 8; f[13] = type & 0xff;
  return f;
}
const BCAST = 0xffffffffffff;
const VM = (i: number): number => 0x0200_0000_1000 + i;
const UP = (i: number): number => 0x0200_0000_2000 + i;

function rig(mode: BondMode, n = 2, extra: Partial<BondOptions> = {}) {
  let now = 0;
  const carrier = new Array(n).fill(true);
  const members = Array.from({ length: n }, () => new Member());
  const events: BondEvent[] = [];
  const bond = new BondIo('bond0', members.map((io, i) => ({ name: `m${i}`, io })), {
    mode, timers: false, clock: () => now, linkOf: (name) => carrier[Number(name.slice(1))],
    macOf: (name) => 0x0200_0000_0f00 + Number(name.slice(1)), onEvent: (e) => events.push(e), ...extra,
  });
  const br = new Bridge('br0', { clock: () => now });
  const vm = new TestIo();
  br.addPort('vm', vm);
  const port = br.addPort('bond0', bond);
  return {
    bond, br, vm, members, carrier, events, port,
    get now() { return now; },
    advance(ms: number, step = 100) {
      const end = now + ms;
      while (now < end) { now = Math.min(end, now + step); bond.tick(now); }
    },
  };
}

describe('active-backup', () => {
  it('sends and receives on the active member only', () => {
    const r = rig('active-backup');
    expect(r.port.up).toBe(true);
    r.vm.inject(eth(BCAST, VM(1)));
    expect(r.members[0].data()).toHaveLength(1);
    expect(r.members[1].data()).toHaveLength(0);
    r.members[1].inject(eth(VM(1), UP(1)));
    expect(r.vm.take()).toHaveLength(0);
    expect(r.bond.status().members[1].drops).toEqual({ inactive_member: 1 });
    r.members[0].inject(eth(VM(1), UP(1)));
    expect(r.vm.take()).toHaveLength(1);
  });

  it('fails over when the active member loses carrier, with one RARP per MAC behind the bond on the new member', () => {
    const r = rig('active-backup');
    for (let i = 1; i <= 3; i++) r.vm.inject(eth(BCAST, VM(i)));
    r.members[0].take();
    r.carrier[0] = false;
    r.advance(100);
    expect(r.bond.status().active).toBe('m1');
    const rarps = r.members[1].take();
    expect(rarps).toHaveLength(3);
    for (const f of rarps) {
      expect(readMac(f, 0)).toBe(BCAST);
      expect([f[12], f[13], f[21]]).toEqual([0x80, 0x35, 3]);
      expect(readMac(f, 22)).toBe(readMac(f, 6));
    }
    expect(rarps.map((f) => readMac(f, 6)).sort()).toEqual([VM(1), VM(2), VM(3)]);
    expect(r.events.map((e) => e.event)).toEqual(['bond_member_down', 'bond_failover']);
    expect(r.bond.failovers).toBe(1);
    // Traffic follows; the old active member's frames are dropped now.
    r.vm.inject(eth(UP(1), VM(1)));
    expect(r.members[1].data()).toHaveLength(1);
    r.carrier[0] = true;
    r.advance(100);
    expect(r.bond.status().active).toBe('m1'); // no preemption
  });

  it('goes down with its last member and comes back with any', () => {
    const r = rig('active-backup');
    r.carrier[0] = false; r.carrier[1] = false;
    r.advance(100);
    expect(r.port.up).toBe(false);
    r.carrier[1] = true;
    r.advance(100);
    expect(r.port.up).toBe(true);
    expect(r.bond.status().active).toBe('m1');
  });
});

describe('balance-slb', () => {
  it('hashes source MACs over the members, floods included (one member each)', () => {
    const r = rig('balance-slb');
    const per = [0, 0];
    for (let i = 0; i < 64; i++) {
      r.vm.inject(eth(BCAST, VM(i)));
      const a = r.members[0].data().length;
      const b = r.members[1].data().length;
      expect(a + b).toBe(1);
      per[0] += a; per[1] += b;
    }
    expect(per[0]).toBeGreaterThan(10);
    expect(per[1]).toBeGreaterThan(10);
    const st = r.bond.status();
    expect(st.members[0].buckets! + st.members[1].buckets!).toBe(BUCKETS);
  });

  it('takes floods from the upstream on the primary member only, and drops reflections of its own MACs', () => {
    const r = rig('balance-slb');
    r.vm.inject(eth(BCAST, VM(1)));
    r.members[0].inject(eth(BCAST, UP(1)));
    r.members[1].inject(eth(BCAST, UP(1)));
    expect(r.vm.take()).toHaveLength(1);
    // The upstream floods our VM's broadcast back on the primary member: not learned on the bond.
    r.members[0].inject(eth(BCAST, VM(1)));
    r.members[1].inject(eth(UP(2), VM(1)));
    expect(r.br.fdb.lookup(1, VM(1))).toBe(r.br.port('vm')!.id);
    const d = r.bond.status().members;
    expect(d[0].drops).toEqual({ slb_reflection: 1 });
    expect(d[1].drops).toEqual({ slb_flood: 1, slb_reflection: 1 });
    // Unicast from the upstream is taken on any member.
    r.members[1].inject(eth(VM(1), UP(3)));
    expect(r.vm.take()).toHaveLength(1);
  });

  it('moves a dead member\'s buckets to the others and announces the MACs that moved', () => {
    const r = rig('balance-slb', 3);
    for (let i = 0; i < 30; i++) r.vm.inject(eth(BCAST, VM(i)));
    for (const m of r.members) m.take();
    r.carrier[1] = false;
    r.advance(100);
    const st = r.bond.status();
    expect(st.members[1].buckets).toBe(0);
    expect(st.members[0].buckets! + st.members[2].buckets!).toBe(BUCKETS);
    const rarps = [...r.members[0].take(), ...r.members[2].take()];
    expect(rarps).toHaveLength(30);
    expect(r.members[1].take()).toHaveLength(0);
  });

  it('rebalances by load: a heavy source on a busy member moves to the idle one', () => {
    const r = rig('balance-slb', 2, { rebalanceMs: 1000 });
    // Two heavy sources that hash to the same member.
    const heavy: number[] = [];
    for (let i = 0; heavy.length < 2; i++) {
      const f = eth(BCAST, VM(i));
      if (r.bond.status().members[0].buckets === 0) break;
      const b = bondBucket(f, 0, false);
      const before = r.members[0].sent.length;
      r.vm.inject(f);
      if (r.members[0].sent.length > before && (heavy.length === 0 || bondBucket(eth(BCAST, heavy[0]), 0, false) !== b)) heavy.push(VM(i));
    }
    for (const m of r.members) m.take();
    for (let k = 0; k < 100; k++) for (const mac of heavy) r.vm.inject(eth(UP(1), mac, 0x0800, 200));
    expect(r.members[0].take()).toHaveLength(200);
    r.advance(1000);
    expect(r.bond.rebalances).toBe(1);
    for (let k = 0; k < 10; k++) for (const mac of heavy) r.vm.inject(eth(UP(1), mac, 0x0800, 200));
    expect(r.members[0].take()).toHaveLength(10);
    expect(r.members[1].take()).toHaveLength(10);
  });
});

describe('lacp', () => {
  function lacpRig(n = 2) {
    const r = rig('lacp', n);
    const partner = new Lacp({ active: true, fast: true }, 0x0200_0000_0b00, 3, n);
    for (let i = 0; i < n; i++) partner.setLink(i, true, 0);
    const cut = new Array(n).fill(false);
    const v = newLacpduView();
    const f = new Uint8Array(LACP_FRAME_LEN);
    const pump = (ms: number) => {
      const end = r.now + ms;
      while (r.now < end) {
        r.advance(100);
        // Our PDUs to the partner; its PDUs to us.
        r.members.forEach((m, i) => {
          for (const s of m.sent.filter((x) => x[12] === 0x88 && x[13] === 0x09)) {
            if (!cut[i] && readLacpdu(s, 0, s.length, v) === LACPDU_OK) partner.receive(i, v, r.now);
          }
          m.sent = m.sent.filter((x) => !(x[12] === 0x88 && x[13] === 0x09));
        });
        partner.tick(r.now, (i) => {
          if (cut[i]) return;
          writeLacpFrame(f, 0, 0x0200_0000_0b01 + i, partner.actorInfo(i, newLacpInfo()), partner.members[i].partner);
          r.members[i].inject(f.slice());
        });
      }
    };
    return { ...r, partner, cut, pump, now: () => r.now };
  }

  it('comes up with the partner; data only on distributing members; LACPDUs never reach the bridge', () => {
    const r = lacpRig();
    expect(r.port.up).toBe(false);
    r.vm.inject(eth(BCAST, VM(1)));
    expect(r.members[0].data().length + r.members[1].data().length).toBe(0);
    r.pump(1500);
    expect(r.port.up).toBe(true);
    const st = r.bond.status();
    expect(st.members.map((m) => m.lacp!.distributing)).toEqual([true, true]);
    expect(st.members[0].lacp!.partnerSystem).toBe('02:00:00:00:0b:00');
    expect(r.partner.distributing(0) && r.partner.distributing(1)).toBe(true);
    expect(r.vm.take()).toHaveLength(0); // no LACPDU was bridged
    let sent = 0;
    for (let i = 0; i < 32; i++) { r.vm.inject(eth(UP(i), VM(i))); sent += r.members[0].data().length + r.members[1].data().length; }
    expect(sent).toBe(32);
  });

  it('a member whose partner goes silent stops carrying within 3 fast periods; the other carries everything', () => {
    const r = lacpRig();
    r.pump(1500);
    r.cut[1] = true;
    r.pump(3500);
    const st = r.bond.status();
    expect(st.members[1].lacp!.status).toBe('expired');
    expect(st.members.map((m) => m.enabled)).toEqual([true, false]);
    for (let i = 0; i < 16; i++) r.vm.inject(eth(UP(i), VM(i)));
    expect(r.members[0].data()).toHaveLength(16);
    expect(r.members[1].data()).toHaveLength(0);
    expect(r.port.up).toBe(true);
  });

  it('counts malformed LACPDUs and other slow protocols, and bridges neither', () => {
    const r = lacpRig();
    r.pump(1500);
    const bad = new Uint8Array(LACP_FRAME_LEN);
    writeLacpFrame(bad, 0, UP(1), newLacpInfo(), newLacpInfo());
    bad[16] = 9;
    r.members[0].inject(bad);
    r.members[0].inject(bad.subarray(0, 20));
    const marker = bad.slice();
    marker[14] = 2;
    r.members[0].inject(marker);
    expect(r.vm.take()).toHaveLength(0);
    expect(r.bond.status().members[0].drops).toEqual({ lacp_malformed: 2, slow_protocol: 1 });
    expect(r.bond.status().members.map((m) => m.lacp!.distributing)).toEqual([true, true]);
  });
});

describe('a member that vanishes', () => {
  it('is counted and logged, and the bond goes on with the rest', () => {
    const r = rig('active-backup');
    r.members[0].rx.link(false, 'interface m0 gone (ENODEV); waiting for it to come back');
    const st = r.bond.status();
    expect(st.members[0]).toMatchObject({ link: 'down', vanished: 1, downReason: expect.stringContaining('gone') });
    expect(st.active).toBe('m1');
    expect(r.events[0]).toMatchObject({ event: 'bond_member_down', member: 'm0' });
    r.vm.inject(eth(UP(1), VM(1)));
    expect(r.members[1].data()).toHaveLength(1);
    r.members[0].rx.link(true, 'interface back');
    expect(r.bond.status().members[0].link).toBe('up');
  });

  it('closing the bond closes every member', () => {
    const r = rig('balance-slb');
    r.br.removePort('bond0');
    expect(r.members.every((m) => m.closed)).toBe(true);
  });
});
