/*
 * A private Open vSwitch in a namespace (own database, sockets and logs in a temp
 * dir: nothing shared with another instance or another test file), and its VXLAN
 * endpoint set up as OVS's "userspace tunneling" guide does with the userspace
 * datapath (datapath_type=netdev): the underlay interface in bridge `brphy`, whose
 * internal port holds the host's underlay address (OVS routes and resolves tunnel
 * peers from it), and bridge `brint` for the VMs and the `vxlan` ports.
 */
import { nsExec, sh, spawnTracked, tempDir, waitFor } from './run.js';

export interface Ovs {
  dir: string;
  vsctl(args: string): Promise<string>;
  appctl(args: string): Promise<string>;
}

/** Starts ovsdb-server and ovs-vswitchd in `ns` (stopped by the run's cleanup). */
export async function startOvs(ns: string): Promise<Ovs> {
  const dir = tempDir('ovs');
  const env = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir, OVS_SYSCONFDIR: dir };
  const ovs: Ovs = {
    dir,
    vsctl: (args) => nsExec(ns, `ovs-vsctl --db=unix:${dir}/db.sock --timeout=20 ${args}`),
    appctl: (args) => nsExec(ns, `ovs-appctl -t ${dir}/ovs-vswitchd.ctl ${args}`),
  };
  await sh(`ovsdb-tool create ${dir}/conf.db /usr/share/openvswitch/vswitch.ovsschema`);
  spawnTracked('ip', ['netns', 'exec', ns, 'ovsdb-server', `${dir}/conf.db`, `--remote=punix:${dir}/db.sock`,
    `--unixctl=${dir}/ovsdb-server.ctl`, `--log-file=${dir}/ovsdb-server.log`], { env }, 'TERM');
  await waitFor('ovsdb-server socket', async () => (await sh(`test -S ${dir}/db.sock && echo y || echo n`)).trim() === 'y', { timeoutMs: 10_000 });
  await ovs.vsctl('--no-wait init');
  spawnTracked('ip', ['netns', 'exec', ns, 'ovs-vswitchd', `unix:${dir}/db.sock`, `--unixctl=${dir}/ovs-vswitchd.ctl`,
    `--log-file=${dir}/ovs-vswitchd.log`], { env }, 'TERM');
  return ovs;
}

/**
 * The OVS VTEP: `underlay` (an interface in `ns`, offloads off) in brphy with
 * `cidr` (IPv4 or IPv6) on brphy's internal port, and an empty brint. Resolves once
 * OVS's route table has the underlay `subnet` (as it prints it: 10.0.0.0/24, fd00:1::/64).
 */
export async function ovsVtep(ovs: Ovs, ns: string, underlay: string, cidr: string, subnet: string): Promise<void> {
  const mac = (await nsExec(ns, `cat /sys/class/net/${underlay}/address`)).trim();
  await ovs.vsctl(`add-br brphy -- set bridge brphy datapath_type=netdev other_config:hwaddr=${mac}`);
  await ovs.vsctl(`add-port brphy ${underlay}`);
  const v6 = cidr.includes(':');
  await nsExec(ns, `ethtool -K brphy tx off >/dev/null 2>&1; ip ${v6 ? '-6 ' : ''}addr add ${cidr} dev brphy${v6 ? ' nodad' : ''} && ip link set brphy up`);
  await ovs.vsctl('add-br brint -- set bridge brint datapath_type=netdev');
  await waitFor('OVS routes the underlay', async () => (await ovs.appctl('ovs/route/show')).includes(`${subnet} dev brphy`), { timeoutMs: 10_000 });
}
