// The part of raw-socket (npm, no bundled types) that icmp.ts uses.
declare module 'raw-socket' {
  import { EventEmitter } from 'node:events';

  export interface SocketOptions {
    /** IPPROTO_* of the SOCK_RAW socket (Protocol.ICMP). */
    protocol?: number;
    /** AddressFamily.IPv4 (default) or IPv6. */
    addressFamily?: number;
    /** The receive buffer, shared by every 'message' (default 4096: longer packets are cut). */
    bufferSize?: number;
  }

  export class Socket extends EventEmitter {
    /** Queued; sendto() runs when the socket is writable, `before` right before it. */
    send(
      buffer: Buffer, offset: number, length: number, address: string,
      beforeCallback: () => void, afterCallback: (error: Error | null, bytes: number) => void,
    ): this;
    send(
      buffer: Buffer, offset: number, length: number, address: string, afterCallback: (error: Error | null, bytes: number) => void,
    ): this;
    /** setsockopt with an unsigned int value, or a Buffer of `length` bytes; throws on failure. */
    setOption(level: number, option: number, value: number): void;
    setOption(level: number, option: number, value: Buffer, length: number): void;
    pauseRecv(): this;
    resumeRecv(): this;
    close(): this;
  }

  /** Throws (EPERM without CAP_NET_RAW) when the socket cannot be opened. */
  export function createSocket(options?: SocketOptions): Socket;

  export const AddressFamily: { IPv4: number; IPv6: number };
  export const Protocol: { None: number; ICMP: number; TCP: number; UDP: number; ICMPv6: number };
  export const SocketLevel: { SOL_SOCKET: number; IPPROTO_IP: number; IPPROTO_IPV6: number };
  export const SocketOption: Record<string, number>;
}
