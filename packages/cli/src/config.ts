/*
 * The config file: YAML, validated with a schema. Every error names the file, the
 * key path and the line, and nothing is applied unless the whole file is valid.
 * The built-in default (no --config) is one empty bridge, br0.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { z } from 'zod';
import { parseMac } from '@vswitch/switch';
import { VswitchError } from './errors.js';

const vidRange = { error: (iss: { input?: unknown }) => `must be 1-4094, got ${String(iss.input)}` };
const Vid = z.number({ error: 'must be a VLAN ID (1-4094)' }).int('must be an integer VLAN ID').min(1, vidRange).max(4094, vidRange);
const IfName = z.string().regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'must be an interface name: 1-15 characters, no spaces or slashes');
const BridgeName = z.string().regex(/^[A-Za-z0-9_.:-]{1,32}$/, 'must be a bridge name: 1-32 of A-Z a-z 0-9 _ . : -');
const Mac = z.string().refine((s) => parseMac(s) >= 0, 'must be a MAC address like 02:00:00:00:00:01');

const VlanSpec = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('access'), vid: Vid }),
  z.strictObject({ mode: z.literal('trunk'), allowed: z.array(Vid).default([]), native: Vid.optional() }),
  z.strictObject({
    mode: z.literal('hybrid'),
    vlans: z.array(z.strictObject({ vid: Vid, pvid: z.boolean().optional(), untagged: z.boolean().optional() })),
  }),
], { error: 'must have mode: access, trunk or hybrid' });

const PortSchema = z.strictObject({
  type: z.enum(['tap', 'attach'], { error: 'must be tap or attach' }),
  persistent: z.boolean().default(false),
  /** tap only: uid/gid allowed to open the device (TUNSETOWNER/TUNSETGROUP), e.g. for an unprivileged QEMU. */
  owner: z.number().int().min(0).optional(),
  group: z.number().int().min(0).optional(),
  vlan: VlanSpec.optional(),
  maxMacs: z.number().int().min(0).max(1_000_000).default(0),
});

const BridgeSchema = z.strictObject({
  ageing: z.number().int().min(0).max(1_000_000).default(300),
  maxMacs: z.number().int().min(1).max(1_000_000).default(8192),
  ports: z.record(IfName, PortSchema).default({}),
  fdb: z.array(z.strictObject({ mac: Mac, port: IfName, vlan: Vid.optional() })).default([]),
});

export const ConfigSchema = z.strictObject({
  control: z.strictObject({
    socket: z.string().min(1).optional(),
    mode: z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0600"').default('0600'),
  }).default({ mode: '0600' }),
  metrics: z.strictObject({
    /** host:port for the Prometheus endpoint (/metrics, /healthz); "" or "off" disables it. */
    listen: z.string().regex(/^(off|)$|^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/, 'must be host:port (e.g. 127.0.0.1:9464) or "off"').default('127.0.0.1:9464'),
  }).default({ listen: '127.0.0.1:9464' }),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  }).default({ level: 'info' }),
  bridges: z.record(BridgeName, BridgeSchema).default({}),
}).superRefine((cfg, ctx) => {
  const owner = new Map<string, string>();
  for (const [bname, br] of Object.entries(cfg.bridges)) {
    for (const pname of Object.keys(br.ports)) {
      const other = owner.get(pname);
      if (other !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'ports', pname], message: `port is already in bridge ${other}` });
      }
      owner.set(pname, bname);
      const v = br.ports[pname].vlan;
      if (v?.mode === 'hybrid' && v.vlans.filter((x) => x.pvid).length > 1) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'ports', pname, 'vlan', 'vlans'], message: 'at most one VLAN may be the pvid' });
      }
    }
    br.fdb.forEach((f, i) => {
      if (!(f.port in br.ports)) {
        ctx.addIssue({ code: 'custom', path: ['bridges', bname, 'fdb', i, 'port'], message: `no port ${f.port} in bridge ${bname}` });
      }
    });
  }
});

export type Config = z.infer<typeof ConfigSchema>;
export type PortConfig = z.infer<typeof PortSchema>;
export type BridgeConfig = z.infer<typeof BridgeSchema>;

export const DEFAULT_CONFIG_YAML = `# vswitch built-in default: one bridge, no ports (add them with 'vswitch addif').
bridges:
  br0: {}
`;

export class ConfigError extends VswitchError {
  constructor(message: string) {
    super('ECONFIG', message);
  }
}

/** Parses and validates config text; `file` is used only in error messages. */
export function parseConfig(text: string, file: string): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = lc.linePos(e.pos[0]);
    throw new ConfigError(`${file}: line ${pos.line}, column ${pos.col}: ${firstLine(e.message)}`);
  }
  const raw = doc.toJS() ?? {};
  const res = ConfigSchema.safeParse(raw);
  if (res.success) return res.data;
  const lines = res.error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.map(String);
    const key = path.length > 0 ? path.join('.') : '(top level)';
    const node = nearestNode(doc, issue.path as (string | number)[]);
    const at = node ? ` (line ${lc.linePos(node)!.line})` : '';
    return `${file}: ${key}${at}: ${describe(issue)}`;
  });
  throw new ConfigError(lines.join('\n'));
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read config file: ${(e as Error).message}`);
  }
  return parseConfig(text, file);
}

export function defaultConfig(): Config {
  return parseConfig(DEFAULT_CONFIG_YAML, '(built-in default config)');
}

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  if (issue.code === 'invalid_type' && issue.message.includes('received undefined')) return `is required (${issue.expected})`;
  if (issue.code === 'invalid_key' && issue.issues.length > 0) return `bad name: ${issue.issues[0].message}`;
  return issue.message;
}

/** Start offset of the YAML node at `path`, or of its nearest existing ancestor. */
function nearestNode(doc: ReturnType<typeof parseDocument>, path: (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return node.range[0];
  }
  return undefined;
}

function firstLine(s: string): string {
  return s.split('\n')[0];
}
