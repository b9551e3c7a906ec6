/*
 * Freezes one thread of a process, not the process: PTRACE_SEIZE (no signal) and
 * PTRACE_INTERRUPT stop only the thread given, the process's other threads run on
 * (SIGSTOP would stop them all). The daemon's main thread is its PID; freezing it
 * stops the data plane's event loop while the metrics worker thread goes on.
 * The tracer is a small python3 (ctypes) process; if it dies (the test process
 * died: it has --pdeathsig), the kernel detaches and the thread runs again.
 * Needs root (CAP_SYS_PTRACE).
 */
import type { ChildProcess } from 'node:child_process';
import { spawnTracked, toolFile } from './run.js';

const FREEZE_PY = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000
tid = int(sys.argv[1])
def call(req):
    if libc.ptrace(req, tid, None, None) != 0:
        sys.exit(f"ptrace({req}) on {tid}: {os.strerror(ctypes.get_errno())}")
call(PTRACE_SEIZE)
call(PTRACE_INTERRUPT)
os.waitpid(tid, WALL)
print("frozen", flush=True)
sys.stdin.read()
call(PTRACE_DETACH)
print("thawed", flush=True)
`;

export interface Frozen {
  /** Lets the thread run again; resolves once it does. */
  thaw(): Promise<void>;
}

/** Stops thread `tid` (the main thread of process P is P); resolves once it is stopped. */
export async function freezeThread(tid: number): Promise<Frozen> {
  const p: ChildProcess = spawnTracked('/usr/bin/python3', [toolFile('freeze.py', FREEZE_PY), String(tid)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (out.includes('frozen\n')) resolve();
    };
    p.stdout!.on('data', check);
    void exited.then((code) => reject(new Error(`freezing thread ${tid} failed (exit ${code}): ${err.trim()}`)));
  });
  return {
    async thaw(): Promise<void> {
      p.stdin!.end();
      const code = await exited;
      if (code !== 0 || !out.includes('thawed\n')) throw new Error(`thawing thread ${tid} failed (exit ${code}): ${err.trim()}`);
    },
  };
}
