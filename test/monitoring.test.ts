/*
 * The Grafana dashboard and the Prometheus alert rules in monitoring/ (issue 18):
 *   - the rules pass `promtool check rules`, and `promtool test rules` runs their
 *     unit tests (vswitch-alerts.test.yml), which cover every alert firing;
 *   - every expression of the dashboard (panel targets and variable queries, with
 *     Grafana's variables substituted) parses: promtool checks them as recording
 *     rules of a generated file (and fails on a broken one, so the check checks);
 *   - every metric the dashboard and the rules name is one a running daemon
 *     exports: the names are read from the parsed expressions' tokens and compared
 *     with a real scrape's families (prom-client lists every family, with or
 *     without samples);
 *   - a real Prometheus scraping a real daemon (a router whose uplink interface does
 *     not exist, a DHCP VM) evaluates every dashboard expression without an error,
 *     the panels the issue asks for have data (port traffic, MAC table fill, DHCP
 *     pool use, NAT sessions, uplink state), and with the rules loaded (their `for`
 *     set to 0) VswitchUplinkDown fires, VswitchReloadFailed fires once a reload is
 *     refused, and VswitchDown does not.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, startDaemon } from './helpers/daemon.js';
import { makeDhcpVm, udhcpcOnce } from './helpers/dhcp.js';
import { REPO, cleanup, freePort, ifname, shr, sleep, spawnTracked, tempDir, waitFor } from './helpers/run.js';

const DASHBOARD = join(REPO, 'monitoring/grafana/vswitch.json');
const RULES = join(REPO, 'monitoring/prometheus/vswitch-alerts.yml');
const RULES_TEST = join(REPO, 'monitoring/prometheus/vswitch-alerts.test.yml');

/* ---------- the dashboard's expressions ---------- */

interface Expr { where: string; expr: string }

/** Grafana's variables as a query would see them with "All" selected, and a fixed rate interval. */
function substitute(expr: string, rateInterval = '5m'): string {
  return expr
    .replaceAll('$__rate_interval', rateInterval)
    .replaceAll('$__interval', '1m')
    .replace(/\$\{?([A-Za-z_]\w*)\}?/g, '.*');
}

function dashboardExprs(d: any): { targets: Expr[]; variables: { name: string; selector: string; label: string }[] } {
  const targets: Expr[] = [];
  const walk = (panels: any[]): void => {
    for (const p of panels ?? []) {
      if (p.type === 'row') {
        walk(p.panels);
        continue;
      }
      for (const t of p.targets ?? []) targets.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
    }
  };
  walk(d.panels);
  const variables = [];
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const m = /^label_values\((.*),\s*([A-Za-z_]\w*)\s*\)$/.exec(q);
    if (m === null) throw new Error(`variable ${v.name}: not a label_values(selector, label) query: ${q}`);
    variables.push({ name: v.name, selector: m[1], label: m[2] });
  }
  return { targets, variables };
}

/* ---------- metric names in an expression promtool has parsed ---------- */

const AGGREGATORS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile']);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'atan2']);
const LABEL_LISTS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

type Tok = { t: 'id' | 'str' | 'num' | 'p'; v: string };

function tokenize(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === '#') { while (i < s.length && s[i] !== '\n') i++; continue; }
    if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      while (j < s.length && s[j] !== c) j += s[j] === '\\' ? 2 : 1;
      out.push({ t: 'str', v: s.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    const num = /^(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:[a-z]+\d*)*)/.exec(s.slice(i));
    if (num !== null && /[0-9]/.test(c)) { out.push({ t: 'num', v: num[0] }); i += num[0].length; continue; }
    const id = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(s.slice(i));
    if (id !== null) { out.push({ t: 'id', v: id[0] }); i += id[0].length; continue; }
    const op = /^(?:==|!=|>=|<=|=~|!~|[-+*/%^<>=,(){}[\]@])/.exec(s.slice(i));
    if (op === null) throw new Error(`cannot tokenize at ${i}: ${s.slice(i, i + 20)}`);
    out.push({ t: 'p', v: op[0] });
    i += op[0].length;
  }
  return out;
}

/** The metric names of vector selectors in `expr` (already parsed by promtool, so well-formed). */
export function metricNames(expr: string): string[] {
  const toks = tokenize(expr);
  const names = new Set<string>();
  let braces = 0;
  for (let i = 0; i < toks.length; i++) {
    const k = toks[i];
    if (k.t === 'p' && k.v === '{') braces++;
    else if (k.t === 'p' && k.v === '}') braces--;
    else if (k.t === 'p' && k.v === '[') { while (i < toks.length && toks[i].v !== ']') i++; }
    if (k.t !== 'id' || braces > 0) continue;
    if (LABEL_LISTS.has(k.v) && toks[i + 1]?.v === '(') {
      while (i < toks.length && toks[i].v !== ')') i++;
      continue;
    }
    if (KEYWORDS.has(k.v) || AGGREGATORS.has(k.v)) continue;
    if (toks[i + 1]?.v === '(') continue; // a function
    names.add(k.v);
  }
  return [...names];
}

/* ---------- a scrape's families ---------- */

/** Every metric name a text exposition offers: families (# TYPE, with histogram/summary suffixes) and sample names. */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)/.exec(line);
    if (t !== null) {
      names.add(t[1]);
      if (t[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(t[1] + s);
      if (t[2] === 'summary') for (const s of ['_sum', '_count']) names.add(t[1] + s);
      continue;
    }
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line);
    if (m !== null) names.add(m[1]);
  }
  return names;
}

/** Metrics Prometheus itself makes for each target. */
const SCRAPE_SERIES = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

async function promtool(args: string, input?: string): Promise<{ code: number; out: string }> {
  const r = await shr(`promtool ${args}`, { input, timeoutMs: 30_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

describe('monitoring: alert rules', () => {
  it('promtool check rules accepts them; promtool test rules passes their unit tests; every alert is tested firing', async () => {
    const which = await shr('command -v promtool');
    expect(which.code, 'promtool is missing: apt-get install -y --no-install-recommends prometheus (scripts/setup.sh)').toBe(0);
    const check = await promtool(`check rules ${RULES}`);
    expect(check.code, check.out).toBe(0);
    const test = await shr(`cd ${join(REPO, 'monitoring/prometheus')} && promtool test rules ${RULES_TEST}`, { timeoutMs: 60_000 });
    expect(test.code, test.stdout + test.stderr).toBe(0);
    expect(test.stdout).toMatch(/SUCCESS/);
    const alerts = (parseYaml(readFileSync(RULES, 'utf8')).groups as any[]).flatMap((g) => g.rules).map((r) => r.alert as string);
    const tested = new Set((parseYaml(readFileSync(RULES_TEST, 'utf8')).tests as any[])
      .flatMap((t) => t.alert_rule_test ?? []).filter((a) => (a.exp_alerts ?? []).length > 0).map((a) => a.alertname as string));
    expect(alerts.filter((a) => !tested.has(a)), 'alerts without a test that makes them fire').toEqual([]);
    for (const a of ['VswitchDown', 'VswitchUplinkDown', 'VswitchDhcpPoolNearlyFull', 'VswitchNatRefusalsRising', 'VswitchGuardDrops', 'VswitchPortDropsRising', 'VswitchReloadFailed']) {
      expect(alerts).toContain(a);
    }
  });
});

describe('monitoring: dashboard', () => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const { targets, variables } = dashboardExprs(dash);

  it('is a dashboard Grafana imports: uid, unique panel ids, panels on the 24-column grid, the data source a variable', () => {
    expect(dash.uid).toBe('vswitch-overview');
    expect(typeof dash.title).toBe('string');
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(36);
    const panels = dash.panels as any[];
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      expect(typeof p.description, p.title).toBe('string');
    }
    expect(dash.templating.list.find((v: any) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    // What the issue asks the dashboard to show.
    const all = targets.map((t) => t.expr).join('\n');
    for (const m of ['vswitch_port_rx_bytes_total', 'vswitch_port_tx_bytes_total', 'vswitch_port_drops_total', 'vswitch_bridge_max_macs',
      'vswitch_dhcp_pool_size', 'vswitch_nat_sessions', 'vswitch_host_nat_sessions', 'vswitch_nat_sessions_refused_total',
      'vswitch_router_uplink_up']) {
      expect(all, m).toContain(m);
    }
  });

  it('every expression parses (promtool check rules on a generated file of them); a broken one would fail', async () => {
    const dir = tempDir('dash');
    const rules = [
      ...targets.map((t, i) => ({ record: `dashboard:target_${i}`, expr: substitute(t.expr), labels: { where: t.where } })),
      ...variables.map((v) => ({ record: `dashboard:variable_${v.name}`, expr: substitute(v.selector) })),
    ];
    const file = join(dir, 'dashboard-exprs.yml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = await promtool(`check rules ${file}`);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`SUCCESS: ${rules.length} rules found`);
    const bad = join(dir, 'bad.yml');
    writeFileSync(bad, stringify({ groups: [{ name: 'd', rules: [{ record: 'x:y', expr: 'sum by (port (rate(vswitch_port_rx_bytes_total[5m]))' }] }] }));
    expect((await promtool(`check rules ${bad}`)).code).not.toBe(0);
  });

  it('the name extraction finds selectors and leaves out functions, aggregations, label names and label lists', () => {
    expect(metricNames('sum by (bridge, port) (rate(vswitch_port_rx_bytes_total{job=~".*",port!="x"}[5m])) * 8')).toEqual(['vswitch_port_rx_bytes_total']);
    expect(metricNames('a_b / on(instance) group_left(version) (c:d > 0) or vector(0)')).toEqual(['a_b', 'c:d']);
    expect(metricNames('count(up{job="vswitch"} == 0) without (instance) unless x offset 5m')).toEqual(['up', 'x']);
  });

  describe('against a real daemon and a real Prometheus', () => {
    const TAP = ifname('dsh1');
    let d: Daemon;
    let metricsAddr: string;
    let promAddr: string;
    let prom: ChildProcess | undefined;
    let promLog = '';
    let text = '';

    const query = async (q: string): Promise<{ status: string; error?: string; data?: { result: any[] } }> => {
      const r = await fetch(`http://${promAddr}/api/v1/query?query=${encodeURIComponent(q)}`, { signal: AbortSignal.timeout(5000) });
      return await r.json() as any;
    };

    beforeAll(async () => {
      metricsAddr = `127.0.0.1:${await freePort()}`;
      d = await startDaemon({
        metrics: { listen: metricsAddr },
        bridges: { br0: { ports: { [TAP]: { type: 'tap', vlan: { mode: 'access', vid: 10 } } } } },
        routers: {
          r0: {
            uplink: { interface: ifname('dshup'), address: '198.51.100.2/24', gateway: '198.51.100.1' },
            networks: { net10: { bridge: 'br0', vlan: 10, address: '10.62.10.1/24', dhcp: { pool: ['10.62.10.100-10.62.10.109'] } } },
          },
        },
      });
      await d.waitForLog('metrics_listening');
      const vm = await makeDhcpVm('dsh1', TAP);
      const lease = await udhcpcOnce(vm);
      expect(lease.code, lease.log).toBe(0);
      text = await (await fetch(`http://${metricsAddr}/metrics`, { signal: AbortSignal.timeout(5000) })).text();

      // Prometheus with the rules, their `for` set to 0 so that they fire at the first evaluation.
      const dir = tempDir('dprom');
      const rules = parseYaml(readFileSync(RULES, 'utf8'));
      for (const g of rules.groups) for (const r of g.rules) r.for = '0s';
      writeFileSync(join(dir, 'rules.yml'), stringify(rules));
      writeFileSync(join(dir, 'prometheus.yml'), stringify({
        global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
        rule_files: [join(dir, 'rules.yml')],
        scrape_configs: [{ job_name: 'vswitch', static_configs: [{ targets: [metricsAddr] }] }],
      }));
      promAddr = `127.0.0.1:${await freePort()}`;
      prom = spawnTracked('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=${promAddr}`, '--log.level=warn'], { cwd: dir });
      prom.stdout!.setEncoding('utf8').on('data', (s: string) => { promLog += s; });
      prom.stderr!.setEncoding('utf8').on('data', (s: string) => { promLog += s; });
      await waitFor('Prometheus scraping the daemon', async () => {
        if (prom!.exitCode !== null) throw new Error(`prometheus exited ${prom!.exitCode}:\n${promLog}`);
        try {
          const r = await query('up{job="vswitch"}');
          return r.data?.result.length === 1 && r.data.result[0].value[1] === '1';
        } catch { return false; }
      }, { timeoutMs: 30_000, intervalMs: 500 });
      await sleep(5000); // a few scrapes, for the rates
    });

    afterAll(async () => {
      if (prom !== undefined && prom.exitCode === null && prom.signalCode === null) {
        const exited = new Promise((r) => prom!.once('exit', r));
        prom.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
      }
      await d?.stop();
      await cleanup();
    });

    it('every metric the dashboard and the rules name is one the daemon exports', () => {
      const exported = exportedNames(text);
      expect(exported.has('vswitch_port_rx_bytes_total')).toBe(true);
      const rules = (parseYaml(readFileSync(RULES, 'utf8')).groups as any[]).flatMap((g) => g.rules);
      const named: Expr[] = [
        ...targets,
        ...variables.map((v) => ({ where: `variable ${v.name}`, expr: v.selector })),
        ...rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr as string })),
      ];
      const unknown: string[] = [];
      for (const e of named) {
        const names = metricNames(substitute(e.expr));
        expect(names.length, `${e.where}: no metric in ${e.expr}`).toBeGreaterThan(0);
        for (const n of names) if (!exported.has(n) && !SCRAPE_SERIES.has(n)) unknown.push(`${e.where}: ${n}`);
      }
      expect(unknown).toEqual([]);
      // Variables read labels the metric has.
      for (const v of variables) {
        const [name] = metricNames(substitute(v.selector));
        const sample = text.split('\n').find((l) => l.startsWith(`${name}{`));
        expect(sample, `${name} has samples`).toBeDefined();
        // job and instance are the target's labels, which Prometheus adds at the scrape.
        if (!['job', 'instance'].includes(v.label)) expect(sample, `variable ${v.name}: label ${v.label} on ${name}`).toContain(`${v.label}="`);
      }
    });

    it('Prometheus evaluates every dashboard expression; the issue\'s panels have data', async () => {
      const failed: string[] = [];
      const withData = new Set<string>();
      for (const t of targets) {
        const r = await query(substitute(t.expr, '10s'));
        if (r.status !== 'success') failed.push(`${t.where}: ${r.error}`);
        else if (r.data!.result.length > 0) withData.add(t.where.replace(/ [A-Z]$/, ''));
      }
      expect(failed).toEqual([]);
      for (const title of ['Received (bits/s)', 'Sent (bits/s)', 'MAC table fill', 'DHCP pool use', 'NAT sessions', 'NAT refusals/s', 'Uplinks',
        'Uplink state', 'Daemon up', 'Config reload', 'Version', 'DHCP messages/s', 'Port state', 'Ports down']) {
        expect(withData.has(`panel "${title}"`), `panel "${title}" has no data`).toBe(true);
      }
      // One lease of a 10-address pool: 10 %.
      const pool = await query(substitute(targets.find((t) => t.where.startsWith('panel "DHCP pool use"'))!.expr));
      expect(pool.data!.result.map((s: any) => Number(s.value[1]))).toEqual([0.1]);
    });

    it('the rules fire on the daemon\'s metrics: the uplink down at once, a refused reload once it happens; not VswitchDown', async () => {
      const firing = async (): Promise<any[]> => {
        const r = await fetch(`http://${promAddr}/api/v1/alerts`, { signal: AbortSignal.timeout(5000) });
        return ((await r.json() as any).data.alerts as any[]).filter((a) => a.state === 'firing');
      };
      await waitFor('VswitchUplinkDown firing', async () => (await firing()).some((a) => a.labels.alertname === 'VswitchUplinkDown'), { timeoutMs: 15_000, intervalMs: 500 });
      const up = (await firing()).find((a) => a.labels.alertname === 'VswitchUplinkDown');
      expect(up.labels).toMatchObject({ router: 'r0', interface: ifname('dshup'), severity: 'critical', job: 'vswitch' });
      expect((await firing()).some((a) => a.labels.alertname === 'VswitchReloadFailed')).toBe(false);
      writeFileSync(d.configFile, 'bridges: [nonsense\n');
      expect((await d.cli(['reload'])).code).toBe(1);
      await waitFor('VswitchReloadFailed firing', async () => (await firing()).some((a) => a.labels.alertname === 'VswitchReloadFailed'), { timeoutMs: 15_000, intervalMs: 500 });
      const names = (await firing()).map((a) => a.labels.alertname).sort();
      expect(names).toEqual(['VswitchReloadFailed', 'VswitchUplinkDown']);
    });
  });
});
