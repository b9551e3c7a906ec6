/*
 * The connection record of the host-socket TCP engine (tcp.ts), and its states
 * (passt's tcp_conn.h is the same seam). One Conn per session: the VM's four
 * numbers, the host socket, the send queue (tcp-queue.ts), sequence space both
 * ways, congestion and retransmission state, the one timer, and bookkeeping.
 * Plain fields: the engine reads and writes them on every segment.
 *
 * Phases, and what moves a session between them (the engine does):
 *   CONNECTING  a VM's SYN was seen, the host connect is under way (out)
 *               -> SYN_RCVD when it connects; -> DEAD on failure (RST or ICMP to the VM)
 *   SYN_SENT    a port forward's SYN went to the VM (in)
 *               -> OPEN on its SYN-ACK; -> DEAD on RST or give-up
 *   SYN_RCVD    our SYN-ACK went to the VM (out)
 *               -> OPEN on its ACK; -> DEAD on RST or give-up
 *   OPEN        synchronized both ways; the FIN states (fin_wait, close_wait,
 *               closing, last_ack) are told apart by vmFin, hostEof, closedFirst
 *               -> TIME_WAIT once both FINs are acknowledged; -> DEAD on a reset
 *   TIME_WAIT   lingering, absorbing a retransmitted FIN -> DEAD once the socket
 *               has closed and lingerMs passed (idleClosingMs at the latest), or
 *               on a new SYN for the same four numbers
 *   DEAD        out of the table, its budget unit given back
 */
import type net from 'node:net';
import type { SendQueue } from './tcp-queue.js';

// Phases of a session.
export const CONNECTING = 0; // out: host connect under way, the VM's SYN unanswered
export const SYN_SENT = 1; //   in: our SYN sent to the VM
export const SYN_RCVD = 2; //   out: our SYN-ACK sent to the VM
export const OPEN = 3; //       synchronized; FIN states by flags
export const TIME_WAIT = 4; //  both FINs acknowledged, lingering
export const DEAD = 5; //       out of the table

// Timer kinds.
export const T_NONE = 0;
export const T_RTO = 1;
export const T_PERSIST = 2;

/** The MSS a VM's SYN without the option stands for (RFC 9293 3.7.1). */
export const DEFAULT_VM_MSS = 536;

/** a after b in sequence space (mod 2^32). */
export const seqGt = (a: number, b: number): boolean => ((a - b) | 0) > 0;

export class Conn {
  phase = CONNECTING;
  outside = '';
  /** The bridge port its budget unit is charged to (HostBudget.take). */
  bridgePort = '';
  // VM -> host (our receive side).
  irs = 0;
  rcvNxt = 0;
  /** Right edge of the window we last announced (never moves left). */
  rcvEdge = 0;
  /** Our window scale shift (0 when the VM did not offer scaling). */
  rcvWs = 0;
  /** Largest window this session can announce. */
  rcvMax = 65535;
  vmFin = false;
  // Host -> VM (our send side).
  sndUna: number;
  sndNxt: number;
  sndMax: number;
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  sndWs = 0;
  vmWs = -1;
  mss = DEFAULT_VM_MSS;
  gsoMax = DEFAULT_VM_MSS;
  hostEof = false;
  finAcked = false;
  /** Our FIN went out before the VM's (closing rather than last_ack). */
  closedFirst = false;
  cwnd = 0;
  ssthresh = 0x7fffffff;
  dupAcks = 0;
  inRecovery = false;
  recover = 0;
  srtt = -1;
  rttvar = 0;
  rto: number;
  retx = 0;
  rttOn = false;
  rttSeq = 0;
  rttAt = 0;
  // Timer.
  timer: NodeJS.Timeout | undefined = undefined;
  timerDue = 0;
  deadline = 0;
  kind = T_NONE;
  persistMs = 0;
  // Socket.
  paused = false;
  corked = false;
  flushQueued = false;
  /** #output due at the end of the batch (the VM's ACKs opened room). */
  sendQueued = false;
  outputQueued = false;
  ackPending = false;
  sockClosed = false;
  released = false;
  // Bookkeeping.
  readonly created: number;
  lastSeen: number;
  since = 0;
  txBytes = 0;
  rxBytes = 0;
  /** The VM's SYN: IP header + 8 bytes, for an ICMP error while connecting. */
  quote: Buffer | undefined = undefined;
  onTimer: () => void = () => {};

  constructor(
    readonly out: boolean,
    readonly vmIp: number,
    readonly vmPort: number,
    readonly ip: number,
    readonly port: number,
    readonly k1: number,
    readonly k2: number,
    readonly sock: net.Socket,
    readonly q: SendQueue,
    readonly iss: number,
    now: number,
    rto: number,
  ) {
    this.sndUna = iss;
    this.sndNxt = iss;
    this.sndMax = iss;
    this.rto = rto;
    this.created = now;
    this.lastSeen = now;
  }

  stateName(): string {
    switch (this.phase) {
      case CONNECTING:
      case SYN_SENT:
        return 'syn_sent';
      case SYN_RCVD:
        return 'syn_received';
      case OPEN:
        if (!this.vmFin) return this.hostEof ? 'fin_wait' : 'established';
        if (!this.hostEof) return 'close_wait';
        return this.closedFirst ? 'closing' : 'last_ack';
      case TIME_WAIT:
        return 'time_wait';
      default:
        return 'closed';
    }
  }
}
