/*
 * The daemon read and driven without the CLI: one request on its control socket (the
 * newline-delimited JSON the CLI speaks, for commands the test wants to send as they
 * are) and its Prometheus endpoint scraped with curl and read line by line.
 */
import { createConnection } from 'node:net';
import { sh } from './run.js';

/** One control-socket request `{ id: 1, cmd, args }` on `socket`; resolves with the first reply line, parsed. */
export function control(socket: string, cmd: string, args: Record<string, unknown>): Promise<any> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socket);
    let buf = '';
    s.on('data', (c) => {
      buf += c.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        s.end();
        resolve(JSON.parse(buf.slice(0, i)));
      }
    });
    s.on('error', reject);
    s.write(JSON.stringify({ id: 1, cmd, args }) + '\n');
  });
}

/** The metrics text from a listener on 127.0.0.1:`port` (in the test's namespace). */
export function scrape(port: number): Promise<string> {
  return sh(`curl -sf --max-time 5 http://127.0.0.1:${port}/metrics`);
}

/** The value of the first series `name{...}` in `text` whose labels include every one of `labels`. */
export function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').at(-1));
  }
  return undefined;
}
