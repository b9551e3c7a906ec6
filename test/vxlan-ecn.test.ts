/*
 * VXLAN keeps the inner packet's DSCP and ECN (RFC 6040 normal mode, Linux vxlan's
 * `tos inherit`), over each underlay family: host A runs the vswitch daemon with
 * `vxlan.tos: inherit` and a VM on a TAP (VLAN 10 = VNI 100); host B is plain Linux,
 * a bridge with a `vxlan` device created with `tos inherit` and a VM on a veth. The
 * underlay is a Linux bridge in a third namespace.
 *
 * Shows (tcpdump -v on B's underlay link reads the outer IPv4 TOS / IPv6 traffic
 * class and the inner header of every packet A sends):
 *  - a VM's DSCP EF (0xb8) datagrams leave with outer DSCP EF; ECT(0) and ECT(1)
 *    are copied, an inner CE leaves as ECT(0); Linux's answers come through;
 *  - a TCP transfer from A's VM (DSCP EF, ECN negotiated: its data is ECT(0)) in
 *    TSO super-frames that A segments and sends as UDP GSO datagrams (and, with
 *    `offload: off`, in one sendmmsg): every packet's outer DS field is its inner
 *    one's (per message: the header A wrote, IP_TOS or IPV6_TCLASS);
 *  - `tos` changed by reload: a fixed DSCP, the ECN field still the inner one (`ecn: off`: Not-ECT);
 *  - a CE mark set on the outer header (scapy, on B's underlay link, from B's address)
 *    over an ECT(0) inner packet arrives in A's VM as CE (tcpdump in the VM's
 *    namespace), and the VM answers it (its kernel checked the IPv4 header checksum
 *    A fixed); over a Not-ECT inner packet it is dropped and counted (`ecn_not_ect`,
 *    in `vxlan show` and vswitch_vxlan_drops_total).
 *  - the same with an inner IPv6 packet (ECT(1) under CE -> CE, its flow label kept).
 * The VMs' traffic is UDP sent with socat's `tos` option (busybox ping has no -Q) and
 * TCP with net.ipv4.tcp_ecn=1 in A's VM. Everything stays in this run's namespaces.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { cleanup, ifname, nsExec, nsExecR, nsname, waitFor } from './helpers/run.js';
import { Background, captureDuring, pingUntil } from './helpers/vm.js';
import { linuxVtep, macOf, makeHosts, reloadWith, scapy, tapVm, underlayLink, vethVm, vxlanShow } from './helpers/vxlan.js';

/** One packet tcpdump -v printed: its DS field (tos / class: 0 when IPv6's is not printed), whether it starts a capture record (the outer header), and its text. */
interface DsLine { ds: number; outer: boolean; text: string }

/**
 * The IP headers in tcpdump -e -v output, in order. A VXLAN packet gives two: its
 * outer header (the record's first line, timestamped) then the inner one.
 */
function dsLines(lines: string[]): DsLine[] {
  return lines.flatMap((l, i) => {
    const m = /\((?:tos (0x[0-9a-f]+)|(?:class (0x[0-9a-f]+), )?flowlabel)/.exec(l);
    if (!m) return [];
    return [{ ds: Number(m[1] ?? m[2] ?? 0), outer: /^\d\d:\d\d:\d\d\./.test(l), text: `${l} ${lines[i + 1] ?? ''}` }];
  });
}

/** Each outer header of what A sent to B's port 4789, with the inner header that follows it. */
function encapsulated(lines: string[], a: string, b: string): { outer: number; inner: number; text: string }[] {
  const ds = dsLines(lines);
  return ds.flatMap((d, i) => {
    const next = ds[i + 1];
    if (!d.outer || !d.text.includes(`${a}.`) || !d.text.includes(`> ${b}.4789`) || next === undefined || next.outer) return [];
    return [{ outer: d.ds, inner: next.ds, text: `${d.text} | ${next.text}` }];
  });
}

for (const family of [4, 6] as const) {
  const v6 = family === 6;
  const UNDER = v6 ? { a: 'fd00:236::1', b: 'fd00:236::2' } : { a: '10.236.0.1', b: '10.236.0.2' };
  const VM = { a: `10.236.${family}.11`, b: `10.236.${family}.12` };
  const HOST_A = nsname(`e${family}a`);
  const HOST_B = nsname(`e${family}b`);
  const UNDERLAY = nsname(`e${family}u`);
  const UA = ifname(`e${family}ua`);
  const UB = ifname(`e${family}ub`);
  const TAP = ifname(`e${family}a10`);
  const BR = 'br0';
  const VM_MTU = v6 ? 1430 : 1450;
  const vmNs = (n: string): string => nsname(`e${family}vm${n}`);
  /** tcpdump filters on the outer DS field, as BPF reads it. */
  const outerIs = (ds: number): string => (v6 ? `ip6[0:2] & 0x0ff0 = 0x${(ds << 4).toString(16).padStart(4, '0')}` : `ip[1] = ${ds}`);

  describe(`VXLAN DS field and ECN (RFC 6040) over IPv${family}, against a Linux vxlan device with tos inherit`, () => {
    let d: Daemon;
    let vmA = '';
    let vmB = '';

    /** `n` UDP datagrams from A's VM to B's VM (port 9: nobody listens, the kernel answers) with DS field `tos`. */
    const udpFromA = (tos: number, n = 3): Promise<string> =>
      nsExec(vmNs('a'), `for i in $(seq ${n}); do echo ds | socat -u - UDP-SENDTO:${VM.b}:9,tos=${tos}; done`);

    beforeAll(async () => {
      await makeHosts(UNDERLAY, [HOST_A, HOST_B], false);
      // B's packets leave complete (a real wire's); A keeps the veth's offloads over IPv4 (its TSO path is under test either way).
      await underlayLink(UNDERLAY, HOST_A, UA, { addr: UNDER.a, offloads: !v6 });
      await underlayLink(UNDERLAY, HOST_B, UB, { addr: UNDER.b, offloads: false });
      const outer = await vethVm({ host: HOST_B, ns: vmNs('b'), inner: ifname(`e${family}vb`), outer: ifname(`e${family}hb`), cidr: `${VM.b}/24`, mtu: VM_MTU, offloads: false });
      await linuxVtep(HOST_B, { dev: UB, local: UNDER.b, vni: 100, flood: [UNDER.a], port: outer, tos: 'inherit' });
      d = await startDaemon({
        // In host A's namespace: nobody else listens there.
        metrics: { listen: '127.0.0.1:9464' },
        bridges: { [BR]: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
        vxlan: { local: UNDER.a, interface: UA, tos: 'inherit', bridges: { [BR]: [{ vni: 100, vlan: 10, flood: [UNDER.b] }] } },
      }, { netns: HOST_A });
      await tapVm(HOST_A, TAP, vmNs('a'), `${VM.a}/24`, VM_MTU);
      // A's VM asks for ECN on its TCP connections (B's Linux default, 2, accepts it).
      await nsExec(vmNs('a'), 'sysctl -qw net.ipv4.tcp_ecn=1');
      vmA = await macOf(vmNs('a'), TAP);
      vmB = await macOf(vmNs('b'), ifname(`e${family}vb`));
      expect(await pingUntil(vmNs('a'), VM.b, 20_000), 'a -> b').toBe(true);
    }, 120_000);

    afterAll(async () => {
      await d?.stop();
      await cleanup();
    });

    it('shows tos inherit (text and --json)', async () => {
      expect(await vxlanShow(d)).toMatchObject({ tos: 'inherit', family });
      expect((await d.ok(['vxlan', 'show'])).stdout).toMatch(/ttl 64 tos inherit ecn rfc6040/);
    });

    it('copies a VM\'s DSCP EF and its ECN field to the outer header (an inner CE as ECT(0)); Linux answers', async () => {
      for (const [inner, outer] of [[0xb8, 0xb8], [0xba, 0xba], [0xb9, 0xb9], [0xbb, 0xba], [0x00, 0x00]]) {
        const lines = await captureDuring(HOST_B, UB, `-v udp dst port 4789 and src host ${UNDER.a}`, () => udpFromA(inner));
        const udp = encapsulated(lines, UNDER.a, UNDER.b).filter((p) => p.text.includes(`> ${VM.b}.9:`));
        expect(udp.length, lines.join('\n')).toBe(3);
        for (const p of udp) expect([p.inner, p.outer], `inner 0x${inner.toString(16)}: ${p.text}`).toEqual([inner, outer]);
      }
      // B's VTEP (tos inherit) carries its VM's EF back, and A takes it: the VM gets its answers.
      const back = await captureDuring(HOST_B, UB, `udp dst port 4789 and src host ${UNDER.b} and ${outerIs(0xb8)}`, async () => {
        const r = await nsExecR(vmNs('b'), `echo ds | socat -u - UDP-SENDTO:${VM.a}:9,tos=0xb8`);
        expect(r.code).toBe(0);
      });
      expect(back.length, back.join('\n')).toBeGreaterThanOrEqual(1);
    });

    for (const offload of ['auto', 'off'] as const) {
      it(`gives every packet of a VM's TSO super-frames (${offload === 'auto' ? 'sent as UDP GSO' : 'offload off: one sendmmsg'}) the outer DS field of its inner header`, async () => {
        if (offload === 'off') await reloadWith(d, (c) => { c.vxlan.offload = 'off'; });
        try {
          const v0 = await vxlanShow(d);
          const server = new Background(vmNs('b'), 'socat -u TCP-LISTEN:5001,reuseaddr /dev/null');
          let lines: string[] = [];
          try {
            await waitFor('socat listening', async () => (await nsExecR(vmNs('b'), 'ss -ltn | grep -q :5001')).code === 0);
            lines = await captureDuring(HOST_B, UB, `-v udp dst port 4789 and src host ${UNDER.a} and greater 1000`, async () => {
              const r = await nsExecR(vmNs('a'), `head -c 4000000 /dev/zero | socat -u - TCP:${VM.b}:5001,tos=0xb8,connect-timeout=5`, { timeoutMs: 60_000 });
              expect(r.code, r.stderr).toBe(0);
            });
          } finally {
            await server.stop();
          }
          const data = encapsulated(lines, UNDER.a, UNDER.b);
          expect(data.length, lines.slice(0, 20).join('\n')).toBeGreaterThan(100);
          // DSCP EF on every packet; ECN: the inner field (ECT(0) on data, Not-ECT on a retransmission), never anything else.
          expect(data.filter((p) => p.outer !== p.inner || (p.outer & 0xfc) !== 0xb8).map((p) => p.text)).toEqual([]);
          expect(data.filter((p) => p.outer === 0xba).length, 'ECN negotiated: the data is ECT(0)').toBeGreaterThan(data.length / 2);
          const v = await vxlanShow(d);
          expect(v.vnis[0].txSegmented, 'super-frames segmented by the addon').toBeGreaterThan(v0.vnis[0].txSegmented);
          if (offload === 'auto') expect(v.txGso.sends, 'sent as UDP GSO').toBeGreaterThan(v0.txGso.sends);
          else expect(v.txGso.sends, 'offload off: sendmmsg').toBe(v0.txGso.sends);
        } finally {
          if (offload === 'off') await reloadWith(d, (c) => { delete c.vxlan.offload; });
        }
      });
    }

    it('a reload sets a fixed DSCP; the ECN field stays the inner one', async () => {
      await reloadWith(d, (c) => { c.vxlan.tos = 0x20; });
      try {
        expect(await vxlanShow(d)).toMatchObject({ tos: 0x20 });
        expect((await d.ok(['vxlan', 'show'])).stdout).toMatch(/tos 0x20/);
        const lines = await captureDuring(HOST_B, UB, `-v udp dst port 4789 and src host ${UNDER.a}`, () => udpFromA(0xb9));
        const udp = encapsulated(lines, UNDER.a, UNDER.b).filter((p) => p.text.includes(`> ${VM.b}.9:`));
        expect(udp.map((p) => [p.inner, p.outer]), lines.join('\n')).toEqual([[0xb9, 0x21], [0xb9, 0x21], [0xb9, 0x21]]);
        // ecn: off (an underlay that mishandles ECN): the DSCP stays, the outer ECN field is Not-ECT.
        await reloadWith(d, (c) => { c.vxlan.ecn = 'off'; });
        expect(await vxlanShow(d)).toMatchObject({ tos: 0x20, ecn: 'off' });
        expect((await d.ok(['vxlan', 'show'])).stdout).toMatch(/tos 0x20 ecn off/);
        const off = await captureDuring(HOST_B, UB, `-v udp dst port 4789 and src host ${UNDER.a}`, () => udpFromA(0xb9));
        const udpOff = encapsulated(off, UNDER.a, UNDER.b).filter((p) => p.text.includes(`> ${VM.b}.9:`));
        expect(udpOff.map((p) => [p.inner, p.outer]), off.join('\n')).toEqual([[0xb9, 0x20], [0xb9, 0x20], [0xb9, 0x20]]);
      } finally {
        await reloadWith(d, (c) => { c.vxlan.tos = 'inherit'; delete c.vxlan.ecn; });
      }
      expect(await vxlanShow(d)).toMatchObject({ tos: 'inherit', ecn: 'rfc6040' });
    });

    it('an outer CE reaches the VM as CE on an ECT(0) packet (checksum fixed: it answers), and drops a Not-ECT one (ecn_not_ect)', async () => {
      const outerHdr = v6
        ? `Ether(src="${await macOf(HOST_B, UB)}", dst="${await macOf(HOST_A, UA)}")/IPv6(src="${UNDER.b}", dst="${UNDER.a}", tc=0x03, hlim=64)`
        : `Ether(src="${await macOf(HOST_B, UB)}", dst="${await macOf(HOST_A, UA)}")/IP(src="${UNDER.b}", dst="${UNDER.a}", tos=0x03, flags="DF")`;
      const echo = (tos: number, id: number): string =>
        `${outerHdr}/UDP(sport=50000, dport=4789)/VXLAN(flags=0x08, vni=100)/Ether(src="${vmB}", dst="${vmA}")/IP(src="${VM.b}", dst="${VM.a}", tos=${tos})/ICMP(id=${id}, seq=1)/Raw(b"ce")`;
      const before = (await vxlanShow(d)).drops.ecn_not_ect;
      const lines = await captureDuring(vmNs('a'), TAP, '-v icmp', () => scapy(HOST_B, [
        `sendp([${echo(0xba, 0x4242)}, ${echo(0xb8, 0x4343)}], iface="${UB}", inter=0.2)`,
      ]), 1000);
      const pk = dsLines(lines);
      const req = pk.filter((p) => /echo request, id 16962/.test(p.text));
      expect(req.map((p) => p.ds), lines.join('\n')).toEqual([0xbb]);
      expect(pk.some((p) => /echo reply, id 16962/.test(p.text)), `the VM answered: ${lines.join('\n')}`).toBe(true);
      // The Not-ECT one never reached the VM, and is counted.
      expect(pk.filter((p) => /id 17219/.test(p.text)).map((p) => p.text)).toEqual([]);
      const v = await vxlanShow(d);
      expect(v.drops.ecn_not_ect - before).toBe(1);
      expect((await d.ok(['vxlan', 'show'])).stdout).toMatch(/ecn_not_ect 1/);
      const metrics = await nsExec(HOST_A, 'curl -sf http://127.0.0.1:9464/metrics');
      expect(metrics).toMatch(/^vswitch_vxlan_drops_total\{reason="ecn_not_ect"\} 1$/m);
    });

    it('the same for an inner IPv6 packet: its traffic class becomes CE, a Not-ECT one is dropped', async () => {
      // IPv6 on A's VM only for this (the VMs are quiet: IPv6 off); the address without DAD.
      await nsExec(vmNs('a'), `sysctl -qw net.ipv6.conf.${TAP}.disable_ipv6=0 && ip -6 addr add fd00:e${family}::a/64 dev ${TAP} nodad`);
      const outerHdr = v6
        ? `Ether(src="${await macOf(HOST_B, UB)}", dst="${await macOf(HOST_A, UA)}")/IPv6(src="${UNDER.b}", dst="${UNDER.a}", tc=0x03, hlim=64)`
        : `Ether(src="${await macOf(HOST_B, UB)}", dst="${await macOf(HOST_A, UA)}")/IP(src="${UNDER.b}", dst="${UNDER.a}", tos=0x03, flags="DF")`;
      const echo = (tc: number, id: number): string =>
        `${outerHdr}/UDP(sport=50000, dport=4789)/VXLAN(flags=0x08, vni=100)/Ether(src="${vmB}", dst="${vmA}")/IPv6(src="fd00:e${family}::b", dst="fd00:e${family}::a", tc=${tc}, fl=0x12345)/ICMPv6EchoRequest(id=${id}, seq=1)`;
      const before = (await vxlanShow(d)).drops.ecn_not_ect;
      const lines = await captureDuring(vmNs('a'), TAP, '-v icmp6', () => scapy(HOST_B, [
        `sendp([${echo(0x49, 0x4444)}, ${echo(0x48, 0x4545)}], iface="${UB}", inter=0.2)`,
      ]), 1000);
      const pk = dsLines(lines);
      // tcpdump prints ICMPv6 echo ids in decimal: 0x4444 = 17476, 0x4545 = 17733.
      const req = pk.filter((p) => /echo request, id 17476/.test(p.text));
      expect(req.map((p) => [p.ds, /flowlabel 0x12345/.test(p.text)]), lines.join('\n')).toEqual([[0x4b, true]]);
      expect(pk.filter((p) => /id 17733/.test(p.text)).map((p) => p.text)).toEqual([]);
      expect((await vxlanShow(d)).drops.ecn_not_ect - before).toBe(1);
    });
  });
}
