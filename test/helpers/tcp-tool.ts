/*
 * A small TCP tool (python3) for the host-NAT tests: servers and clients whose
 * every step is printed, so a test can tell a clean end (EOF) from an abort (RST)
 * on either side, and compare what arrived by sha256.
 *
 *   serve PORT MODE [FILE]   one connection at a time, prints "peer IP:PORT" first
 *   serve6 PORT MODE [FILE]  the same on [::] (IPv6 only); clients take an IPv6 HOST too
 *     sink      read to EOF; print "sink N SHA"; reply "got N SHA\n" (the client's
 *               half-close: it can still read after shutting its side)
 *     source    send FILE, shut down the write side, then read to EOF and print
 *               "after N" (bytes the client sent after our FIN)
 *     rst       read one line, then abort (SO_LINGER 0): the client sees a reset
 *     wait      read until EOF or reset: prints "eof N" or "reset N"
 *   get HOST PORT OUT        read to EOF into OUT; print "got N SHA"
 *   put HOST PORT FILE       send FILE, shut down the write side, print the reply line
 *   halfclose HOST PORT      read to EOF ("source"), then send "after-eof\n"; print "eof N SHA"
 *   abort HOST PORT          send a line, then abort (SO_LINGER 0)
 *   readreset HOST PORT      send a line, read: prints "reset" or "eof"
 *   connect HOST PORT        prints "connected", "refused", "unreachable" or "timeout"
 *   dnstcp SERVER NAME       one A query over TCP; prints the first address or "none"
 */
import { q, toolFile, waitFor } from './run.js';
import type { Background } from './vm.js';

const TOOL = String.raw`
import hashlib, socket, struct, sys
def serve(port, mode, path=None, v6=False):
    ls = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('::' if v6 else '0.0.0.0', port)); ls.listen(8); print('listening', flush=True)
    while True:
        c, a = ls.accept(); print('peer %s:%d' % a[:2], flush=True)
        try:
            if mode == 'sink':
                h = hashlib.sha256(); n = 0
                while True:
                    d = c.recv(1 << 20)
                    if not d: break
                    h.update(d); n += len(d)
                print('sink %d %s' % (n, h.hexdigest()), flush=True)
                c.sendall(('got %d %s\n' % (n, h.hexdigest())).encode())
            elif mode == 'source':
                with open(path, 'rb') as f:
                    while True:
                        d = f.read(1 << 20)
                        if not d: break
                        c.sendall(d)
                c.shutdown(socket.SHUT_WR); n = 0
                while True:
                    d = c.recv(65536)
                    if not d: break
                    n += len(d)
                print('after %d' % n, flush=True)
            elif mode == 'rst':
                c.recv(100)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            elif mode == 'wait':
                n = 0
                try:
                    while True:
                        d = c.recv(65536)
                        if not d: break
                        n += len(d)
                    print('eof %d' % n, flush=True)
                except ConnectionResetError:
                    print('reset %d' % n, flush=True)
        except Exception as e:
            print('error %r' % e, flush=True)
        c.close()
def fam(host): return socket.AF_INET6 if ':' in host else socket.AF_INET
def conn(host, port):
    s = socket.socket(fam(host)); s.settimeout(30); s.connect((host, port)); return s
def readall(s, out=None):
    h = hashlib.sha256(); n = 0
    while True:
        d = s.recv(1 << 20)
        if not d: break
        h.update(d); n += len(d)
        if out: out.write(d)
    return n, h.hexdigest()
m = sys.argv[1]
if m == 'serve': serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
elif m == 'serve6': serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None, True)
elif m == 'get':
    s = conn(sys.argv[2], int(sys.argv[3]))
    with open(sys.argv[4], 'wb') as f: print('got %d %s' % readall(s, f))
elif m == 'put':
    s = conn(sys.argv[2], int(sys.argv[3]))
    with open(sys.argv[4], 'rb') as f:
        while True:
            d = f.read(1 << 20)
            if not d: break
            s.sendall(d)
    s.shutdown(socket.SHUT_WR); print(s.makefile().readline().strip())
elif m == 'halfclose':
    s = conn(sys.argv[2], int(sys.argv[3])); n, h = readall(s)
    s.sendall(b'after-eof\n'); s.shutdown(socket.SHUT_WR); print('eof %d %s' % (n, h))
elif m == 'abort':
    s = conn(sys.argv[2], int(sys.argv[3])); s.sendall(b'hello\n')
    import time; time.sleep(0.3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); s.close(); print('aborted')
elif m == 'readreset':
    s = conn(sys.argv[2], int(sys.argv[3])); s.sendall(b'hello\n')
    try:
        d = s.recv(100); print('eof' if not d else 'data')
    except ConnectionResetError: print('reset')
elif m == 'connect':
    s = socket.socket(fam(sys.argv[2])); s.settimeout(float(sys.argv[4]) if len(sys.argv) > 4 else 5)
    try: s.connect((sys.argv[2], int(sys.argv[3]))); print('connected')
    except ConnectionRefusedError: print('refused')
    except OSError as e:
        import errno
        print('unreachable' if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else 'timeout' if isinstance(e, socket.timeout) else 'error %r' % e)
elif m == 'dnstcp':
    q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
    for part in sys.argv[3].split('.'): q += bytes([len(part)]) + part.encode()
    q += b'\0' + struct.pack('>HH', 1, 1)
    s = conn(sys.argv[2], 53); s.sendall(struct.pack('>H', len(q)) + q)
    f = s.makefile('rb'); ln = struct.unpack('>H', f.read(2))[0]; r = f.read(ln)
    an = struct.unpack('>H', r[6:8])[0]
    print('.'.join(str(b) for b in r[-4:]) if an > 0 and struct.unpack('>H', r[-14:-12])[0] == 1 else 'none')
`;

/** Path of the tool: `/usr/bin/python3 TOOL MODE ...` (see the header). */
export function tcpTool(): string {
  return toolFile('tcp.py', TOOL);
}

/** The tool's shell command with `args` ("serve 9001 sink", "get HOST PORT OUT"...). */
export function tool(args: string): string {
  return `/usr/bin/python3 ${q(tcpTool())} ${args}`;
}

/** Waits until a server in `b` (the tool's, or any that says so) prints "listening"; fails at once if it exited. */
export async function listening(b: Background, what: string): Promise<void> {
  await waitFor(`${what} to listen`, () => {
    if (b.proc.exitCode !== null) throw new Error(`${what} exited ${b.proc.exitCode}: ${b.out} ${b.err}`);
    return /listening/.test(b.out + b.err);
  }, { timeoutMs: 10_000 });
}
