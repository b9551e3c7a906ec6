import { describe, expect, it } from 'vitest';
import { parseConfig } from './config.js';

const F = '/etc/vswitch/test.yaml';

function errorOf(text: string): string {
  try {
    parseConfig(text, F);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected a config error');
}

describe('config: socket ports', () => {
  it('accepts a socket port with path, mode, owner/group and a VLAN', () => {
    const c = parseConfig(`
bridges:
  br0:
    ports:
      vm1: { type: socket, path: /run/vswitch/vm1.sock, vlan: { mode: access, vid: 10 } }
      vm2: { type: socket, path: /run/vswitch/vm2.sock, mode: "0660", group: 64 }
      vm3: { type: socket, path: /run/qemu/vm3.sock, connect: true }
`, F);
    expect(c.bridges.br0.ports.vm3).toMatchObject({ type: 'socket', connect: true });
    expect(c.bridges.br0.ports.vm1).toMatchObject({ type: 'socket', path: '/run/vswitch/vm1.sock', persistent: false });
    expect(c.bridges.br0.ports.vm1.mode).toBeUndefined(); // 0600 when absent
    expect(c.bridges.br0.ports.vm2).toMatchObject({ mode: '0660', group: 64 });
  });

  it('names the key and line of every socket-port mistake', () => {
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket }\n'))
      .toBe(`${F}: bridges.br0.ports.vm1.path (line 4): is required for a socket port`);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: vm1.sock }\n'))
      .toMatch(/bridges\.br0\.ports\.vm1\.path \(line 4\): must be an absolute path/);
    expect(errorOf(`bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /${'a'.repeat(120)} }\n`))
      .toMatch(/at most 107 bytes/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, mode: "rw" }\n'))
      .toMatch(/vm1\.mode \(line 4\): must be an octal mode/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, persistent: true }\n'))
      .toMatch(/vm1\.persistent \(line 4\): applies to tap ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, path: /x.sock }\n'))
      .toMatch(/vm1\.path \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, mode: "0600" }\n'))
      .toMatch(/vm1\.mode \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock }\n  br1:\n    ports:\n      vm2: { type: socket, path: /x.sock }\n'))
      .toMatch(/bridges\.br1\.ports\.vm2\.path \(line 7\): is already the socket of port vm1/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: socket, path: /x.sock, connect: true, mode: "0660" }\n'))
      .toMatch(/vm1\.mode \(line 4\): applies to a listening socket port only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: tap, connect: true }\n'))
      .toMatch(/vm1\.connect \(line 4\): applies to socket ports only/);
    expect(errorOf('bridges:\n  br0:\n    ports:\n      vm1: { type: vde }\n'))
      .toMatch(/must be tap, attach or socket/);
  });
});
