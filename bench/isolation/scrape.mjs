// N concurrent scrapes of a metrics URL, each starting again as soon as it ends, for SECONDS
// (bench/isolation/run.sh). Prints "done N errors M".
import http from 'node:http';

const [url, conc = '500', secs = '5'] = process.argv.slice(2);
const end = Date.now() + Number(secs) * 1000;
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
let done = 0;
let errors = 0;
let live = 0;
const one = () => {
  if (Date.now() >= end) {
    if (--live === 0) console.log(`done ${done} errors ${errors}`);
    return;
  }
  let over = false;
  const next = (ok) => {
    if (over) return;
    over = true;
    if (ok) done++; else errors++;
    if (ok) one(); else setTimeout(one, 10);
  };
  const req = http.get(url, { agent, timeout: 30_000 }, (res) => {
    res.resume();
    res.on('end', () => next(res.statusCode === 200));
    res.on('error', () => next(false));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => next(false));
};
for (let i = 0; i < Number(conc); i++) { live++; one(); }
