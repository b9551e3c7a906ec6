/*
 * The host's identity for the MACs the daemon makes up (a router's uplink, its
 * gateways): unique per host, stable across restarts, and never revealing the
 * machine id itself.
 *
 * Model (systemd's, machine-id(5) and sd_id128_get_machine_app_specific(3)):
 * the machine id (/etc/machine-id, 128 bits) is confidential and must not go on
 * the wire, so it only ever keys an HMAC. vswitch's host key is
 *   HMAC-SHA256(key = machine id, data = APP_ID)[0..16), UUID v4 bits set,
 * exactly what `systemd-id128 machine-id --app-specific=APP_ID` prints, and a MAC
 * for a name is
 *   HMAC-SHA256(key = host key, data = name)[0..6), first octet unicast and
 *   locally administered ((b & 0xfc) | 0x02),
 * as systemd-networkd/udev derive a persistent MAC from the machine id and the
 * interface name (46 bits of hash). So two hosts with a router called `r0` get
 * different MACs, one host gets the same MAC after every restart, and nobody can
 * go back from a MAC to the machine id.
 *
 * Without a usable /etc/machine-id (absent, empty, "uninitialized" at first boot,
 * not 32 hex digits, all zeros: containers often have none) a random id is made
 * once and kept in the state directory as `machine-id` (0600), so the MACs stay
 * stable across restarts there too. VSWITCH_MACHINE_ID_FILE names another file to
 * read instead of /etc/machine-id (tests; containers that bind-mount the host's).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readStateFile, writeStateFile } from '@vswitch/nat';

/** vswitch's application id for sd_id128_get_machine_app_specific (made once with `systemd-id128 new`). */
export const APP_ID = 'a0df2a84600144ed88b813af252476b8';

export const MACHINE_ID_FILE = '/etc/machine-id';
/** The fallback id's file name in the state directory. */
export const STATE_MACHINE_ID = 'machine-id';

/** The 16 bytes of a machine-id(5) text (32 lowercase or uppercase hex digits, a newline allowed), or undefined. */
export function parseMachineId(text: string | undefined): Buffer | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (!/^[0-9a-fA-F]{32}$/.test(t) || /^0+$/.test(t)) return undefined;
  return Buffer.from(t, 'hex');
}

/** sd_id128_get_machine_app_specific(machineId, APP_ID): the host key, 16 bytes. */
export function appSpecificId(machineId: Uint8Array, appId: string = APP_ID): Buffer {
  const h = createHmac('sha256', machineId).update(Buffer.from(appId, 'hex')).digest().subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x40;
  h[8] = (h[8] & 0x3f) | 0x80;
  return h;
}

/** A locally administered unicast MAC (48 bits in a number) for `name` under `hostKey`. */
export function macFor(hostKey: Uint8Array, name: string): number {
  const h = createHmac('sha256', hostKey).update(name, 'utf8').digest();
  h[0] = (h[0] & 0xfc) | 0x02;
  return h.readUIntBE(0, 6);
}

export interface HostKey {
  key: Buffer;
  /** Where the machine id came from: the file read, or the state file made or read as fallback. */
  source: string;
  /** True when the fallback id was created just now. */
  created: boolean;
  /** Why the machine-id file was not used (fallback only). */
  reason?: string;
}

/**
 * The host key: from the machine-id file (VSWITCH_MACHINE_ID_FILE or
 * /etc/machine-id), else from `stateDir/machine-id`, made and persisted when
 * absent or unreadable. Throws only when the fallback cannot be written.
 */
export function loadHostKey(stateDir: string, env: NodeJS.ProcessEnv = process.env): HostKey {
  const file = env.VSWITCH_MACHINE_ID_FILE || MACHINE_ID_FILE;
  let text: string | undefined;
  let reason: string;
  try {
    text = readFileSync(file, 'utf8');
    reason = `${file} is not a machine id (32 hex digits)`;
  } catch (e) {
    reason = `${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
  const id = parseMachineId(text);
  if (id !== undefined) return { key: appSpecificId(id), source: file, created: false };
  const path = join(stateDir, STATE_MACHINE_ID);
  let saved: Buffer | undefined;
  try {
    saved = parseMachineId(readStateFile(path));
  } catch { /* a symlink or a directory there: replaced below by a plain file */ }
  if (saved !== undefined) return { key: appSpecificId(saved), source: path, created: false, reason };
  const fresh = randomBytes(16);
  writeStateFile(path, `${fresh.toString('hex')}\n`);
  return { key: appSpecificId(fresh), source: path, created: true, reason };
}

const cache = new Map<string, HostKey>();

/** loadHostKey, once per state directory for the life of the process: MACs never change under a running daemon. */
export function hostKey(stateDir: string): HostKey {
  let k = cache.get(stateDir);
  if (k === undefined) {
    k = loadHostKey(stateDir);
    cache.set(stateDir, k);
  }
  return k;
}
