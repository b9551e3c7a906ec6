/*
 * The monitor hub (monitor.ts) with stand-in sockets: events reach every client,
 * a client with MAX_PENDING unsent bytes gets no more (dropped, counted) while the
 * others still get theirs, and after its socket drains it is told how many it
 * missed; clients coming and going switch the learning report on and off; the
 * per-second budget refuses and counts the excess.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EventBudget, MAX_PENDING, Monitor, type MonitorSink } from './monitor.js';

/** A socket double: `written` lines; `pending` bytes count as unsent until `drain()`. */
class Sink extends EventEmitter {
  written: string[] = [];
  writableLength = 0;
  destroyed = false;
  readonly hold: boolean;
  constructor(hold = false) {
    super();
    this.hold = hold;
  }
  write(s: string): boolean {
    this.written.push(s);
    if (this.hold) this.writableLength += s.length;
    return this.writableLength < 16384;
  }
  drain(): void {
    this.writableLength = 0;
    this.emit('drain');
  }
}

const asSink = (s: Sink): MonitorSink & { on: any } => s as unknown as MonitorSink & { on: any };

describe('Monitor', () => {
  it('fans each event out as one JSON line with a time, to every client', () => {
    const m = new Monitor();
    const a = new Sink();
    const b = new Sink();
    m.subscribe(asSink(a));
    m.subscribe(asSink(b));
    m.emit({ event: 'port_up', bridge: 'br0', port: 'vm1' });
    for (const s of [a, b]) {
      expect(s.written).toHaveLength(1);
      expect(JSON.parse(s.written[0])).toMatchObject({ event: 'port_up', bridge: 'br0', port: 'vm1' });
      expect(JSON.parse(s.written[0]).time).toMatch(/^\d{4}-\d\d-\d\dT/);
    }
  });

  it('a client that does not read holds at most MAX_PENDING bytes; the rest is dropped and counted, then announced', () => {
    const m = new Monitor();
    const slow = new Sink(true);
    const fast = new Sink();
    m.subscribe(asSink(slow));
    m.subscribe(asSink(fast));
    for (let i = 0; i < 5000; i++) m.emit({ event: 'mac_learned', bridge: 'br0', vlan: 10, mac: '02:00:00:00:00:01', port: `vm${i}` });
    expect(slow.writableLength).toBeLessThanOrEqual(MAX_PENDING);
    expect(fast.written).toHaveLength(5000);
    const st = m.stats();
    const s = st.clients.find((c) => c.pending > 0)!;
    expect(s.sent + s.dropped).toBe(5000);
    expect(s.dropped).toBeGreaterThan(4000);
    expect(st.dropped).toBe(s.dropped);
    const before = slow.written.length;
    slow.drain();
    const notice = JSON.parse(slow.written[before]);
    expect(notice).toMatchObject({ event: 'events_dropped', count: s.dropped });
    // Caught up: events flow again.
    slow.writableLength = 0;
    m.emit({ event: 'port_down', bridge: 'br0', port: 'vm1' });
    expect(JSON.parse(slow.written.at(-1)!).event).toBe('port_down');
  });

  it('learning is watched only while a client is subscribed', () => {
    const m = new Monitor();
    const seen: boolean[] = [];
    m.onActive = (on) => seen.push(on);
    const a = new Sink();
    const b = new Sink();
    m.subscribe(asSink(a));
    m.subscribe(asSink(b));
    a.emit('close');
    expect(m.active).toBe(true);
    b.emit('close');
    b.emit('close');
    expect(m.active).toBe(false);
    expect(seen).toEqual([true, false]);
    m.emit({ event: 'port_up' });
    expect(m.stats().events).toBe(0);
  });

  it('EventBudget: perSec a second, the excess counted until the tick', () => {
    const b = new EventBudget(3);
    expect([b.take(), b.take(), b.take(), b.take(), b.take()]).toEqual([true, true, true, false, false]);
    expect(b.tick()).toBe(2);
    expect(b.take()).toBe(true);
    expect(b.tick()).toBe(0);
  });
});
