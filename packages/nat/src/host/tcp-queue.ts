/*
 * The TCP engine's send side towards the VMs, apart from any connection: the
 * frame blocks host data is read into, their pool, and each session's queue of
 * blocks (passt's tcp_buf.c is the same seam).
 *
 * No copy of host data: the sockets the engine connects are created with Node's
 * `onread`, so the kernel's read lands in a block at the payload offset of the
 * frame it becomes; BLOCK_HDR bytes in front of it are the room for the
 * virtio_net_hdr, Ethernet, IP and TCP headers, which the engine writes there
 * before handing the block itself to the VM. The blocks are the retransmission
 * store and return to the pool once acknowledged: steady traffic allocates
 * nothing, and reads cost no 64 KiB buffer each. Full blocks hold a multiple of
 * the MSS, so a block is one GSO frame. Accepted sockets (port forwards) cannot
 * take `onread`: their 'data' chunks are queued as they are (no room for headers
 * in them: frames are copied from them).
 *
 * Nothing here knows sockets, timers or sequence numbers: positions are byte
 * offsets into the queue (0 = the first byte not yet acknowledged), and the
 * engine (tcp.ts) maps sequence numbers to them. Tested alone (tcp-queue.test.ts).
 */
import { IP4_MAX_LEN, IP4_MIN_HLEN, IP6_HLEN, TCP_MIN_HLEN } from '@vswitch/switch';
import { HOST_HEADROOM } from './types.js';

/** IPv4 and TCP headers without options: what a data frame carries before its payload. */
const HDRS = IP4_MIN_HLEN + TCP_MIN_HLEN;
/**
 * Where a block's payload starts: room for the virtio_net_hdr, Ethernet, IP and
 * TCP headers of its frame, IPv6's the longer (an IPv4 frame starts 20 bytes in).
 */
const HDR = HOST_HEADROOM + IP6_HLEN + TCP_MIN_HLEN;
/** The most payload one frame carries (IPv4 total length 65535, a TCP header without options). */
const DATA = IP4_MAX_LEN - HDRS;
/** Bytes of a small block: a session's first read, and trickles. */
const SMALL = 4096;
/**
 * Free blocks an engine keeps at most (64 KB large, 4 KB small); more go to the
 * GC. Those not taken during a whole tick (about a second) go too.
 */
const LARGE_KEPT = 256;
const SMALL_KEPT = 1024;
// The code reads the module constants above; these are their public names (an
// exported binding costs a check at every use: @vswitch/switch wire/bytes.ts).
export const TCP_IP_HLEN = HDRS;
export const BLOCK_HDR = HDR;
export const BLOCK_DATA = DATA;
export const BLOCK_SMALL = SMALL;
export const POOL_LARGE = LARGE_KEPT;
export const POOL_SMALL = SMALL_KEPT;

/**
 * Host data at buf[start, start+fill). A pooled block is a frame in the making:
 * start is BLOCK_HDR, the room for the frame's headers, so that a frame
 * starting at its first byte is sent from it as it is; `cap` (<= the buffer's
 * room) is a multiple of the session's MSS where it fits, so that full blocks
 * make full-sized frames. Otherwise it is a socket's 'data' chunk (start 0, no
 * room: frames are copied from it).
 */
export class Block {
  fill = 0;
  cap = 0;

  constructor(readonly buf: Buffer, readonly start: number, readonly large: boolean, readonly pooled: boolean) {}
}

/** The engine's free blocks, reused as they are (no zeroing). */
export class BlockPool {
  readonly #large: Block[] = [];
  readonly #small: Block[] = [];
  /** The fewest free blocks since the last trim: that many were not needed. */
  #lowLarge = 0;
  #lowSmall = 0;

  constructor(readonly counters: { blocks: number }) {}

  take(large: boolean): Block {
    const list = large ? this.#large : this.#small;
    const b = list.pop();
    if (b === undefined) {
      this.counters.blocks++;
      return new Block(Buffer.allocUnsafeSlow(large ? HDR + DATA : SMALL), HDR, large, true);
    }
    if (large) {
      if (list.length < this.#lowLarge) this.#lowLarge = list.length;
    } else if (list.length < this.#lowSmall) {
      this.#lowSmall = list.length;
    }
    return b;
  }

  give(b: Block): void {
    if (b.large) {
      if (this.#large.length < LARGE_KEPT) this.#large.push(b);
    } else if (this.#small.length < SMALL_KEPT) {
      this.#small.push(b);
    }
  }

  /** Lets go of the blocks that stayed free since the last call. */
  trim(): void {
    this.#large.length -= this.#lowLarge;
    this.#small.length -= this.#lowSmall;
    this.#lowLarge = this.#large.length;
    this.#lowSmall = this.#small.length;
  }
}

/**
 * Host data not yet acknowledged by the VM, in blocks (the retransmission store),
 * consumed from the front as ACKs arrive and given back to the pool when done
 * with. A socket created with our `onread` reads straight into the rest of the
 * last block (`target`, `commit`); the chunks of a socket that emits 'data' are
 * queued as they are (`append`: no room for headers in them, so frames are
 * copied from them, as before onread). A cursor remembers the last position
 * sought, so that sending in order never walks the block list.
 *
 * Which block the next read goes to: a session starts with a small block; a read
 * that fills its target means more is waiting, and the next goes to a large one;
 * a short read into a large block with nothing else queued (a trickle: the VM
 * took everything before) goes back to small ones, so that a quiet session holds
 * 4 KB, not 64. Otherwise reads go on filling the block while at least an MSS of
 * it is left.
 */
export class SendQueue {
  /** From index head on: data is [headOff, fill) of the first block and [0, fill) of the others. */
  readonly blocks: (Block | undefined)[] = [];
  head = 0;
  headOff = 0;
  bytes = 0;
  #mss: number;
  #smallCap: number;
  // Cursor: queue position #cPos is payload offset #cOff of blocks[#cIdx].
  #cIdx = 0;
  #cOff = 0;
  #cPos = 0;
  /** The block the socket reads into (onread), from its fill to its cap. */
  #rb: Block | undefined = undefined;
  #rLen = 0;
  /** After a commit: 0 keep reading into #rb, 1 a new large block, 2 a new small one. */
  #next = 0;

  constructor(readonly pool: BlockPool, mss: number) {
    this.#mss = mss;
    this.#smallCap = Math.floor((SMALL - HDR) / mss) * mss;
  }

  set mss(mss: number) {
    this.#mss = mss;
    this.#smallCap = Math.floor((SMALL - HDR) / mss) * mss;
  }

  /** The block at the cursor and the payload offset there (after seek). */
  get curBlock(): Block { return this.blocks[this.#cIdx] as Block; }
  get curOff(): number { return this.#cOff; }

  #newBlock(large: boolean): Block {
    if (!large && this.#smallCap === 0) large = true;
    const b = this.pool.take(large);
    b.fill = 0;
    b.cap = large ? Math.floor(DATA / this.#mss) * this.#mss : this.#smallCap;
    this.blocks.push(b);
    return b;
  }

  /** onread's buffer(): where the socket's next read goes. Never empty. */
  target(): Uint8Array {
    let b = this.#rb;
    if (b === undefined || this.#next !== 0 || b.cap - b.fill <= 0) {
      b = this.#newBlock(b === undefined ? false : this.#next === 1);
      this.#rb = b;
      this.#next = 0;
      this.#trim();
    }
    this.#rLen = b.cap - b.fill;
    return b.buf.subarray(HDR + b.fill, HDR + b.cap);
  }

  /** onread's callback: n bytes were read into the target. */
  commit(n: number): void {
    const b = this.#rb;
    if (b === undefined) return;
    b.fill += n;
    this.bytes += n;
    if (n >= this.#rLen) this.#next = 1;
    else if (b.large && n < this.#smallCap && this.bytes === n) this.#next = 2;
    else if (b.cap - b.fill < this.#mss) this.#next = b.large ? 1 : 2;
    else this.#next = 0;
  }

  /** A 'data' chunk (Node's own buffer, never reused by Node). */
  append(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    const b = new Block(chunk, 0, false, false);
    b.fill = n;
    b.cap = n;
    this.blocks.push(b);
    this.bytes += n;
  }

  /** Drops n (<= bytes) bytes from the front. */
  consume(n: number): void {
    this.bytes -= n;
    this.#cPos -= n;
    this.headOff += n;
    this.#trim();
  }

  /**
   * Normalizes the front (headOff beyond the first block's data moves on), giving
   * back the blocks that are done with: all but the one the socket reads into.
   */
  #trim(): void {
    const blocks = this.blocks;
    while (this.head < blocks.length) {
      const b = blocks[this.head] as Block;
      if (this.headOff < b.fill || b === this.#rb) break;
      this.headOff -= b.fill;
      blocks[this.head++] = undefined;
      if (b.pooled) this.pool.give(b);
    }
    if (this.head === blocks.length) {
      blocks.length = 0;
      this.head = 0;
    } else if (this.head >= 32 && this.head * 2 >= blocks.length) {
      // Many 'data' chunks: compacted now and then, not shifted one by one.
      blocks.splice(0, this.head);
      this.#cIdx -= this.head;
      this.head = 0;
    }
    if (this.#cPos <= 0 || this.#cIdx < this.head) this.#rewind();
  }

  /** Everything back to the pool: the socket must not read any more (destroyed, or at EOF). */
  clear(): void {
    for (let i = this.head; i < this.blocks.length; i++) {
      const b = this.blocks[i] as Block;
      if (b.pooled) this.pool.give(b);
    }
    this.blocks.length = 0;
    this.head = 0;
    this.#rb = undefined;
    this.headOff = 0;
    this.bytes = 0;
    this.#rewind();
  }

  #rewind(): void {
    this.#cIdx = this.head;
    this.#cOff = this.headOff;
    this.#cPos = 0;
  }

  /**
   * Moves the cursor to queue position pos (< bytes) and returns how many bytes
   * from there lie in the same block.
   */
  seek(pos: number): number {
    if (pos < this.#cPos) this.#rewind();
    const blocks = this.blocks;
    let idx = this.#cIdx;
    let off = this.#cOff;
    let p = this.#cPos;
    for (;;) {
      const left = (blocks[idx] as Block).fill - off;
      if (pos - p < left || idx + 1 === blocks.length) {
        off += pos - p;
        p = pos;
        break;
      }
      p += left;
      idx++;
      off = 0;
    }
    this.#cIdx = idx;
    this.#cOff = off;
    this.#cPos = p;
    return (blocks[idx] as Block).fill - off;
  }

  /** Copies queue bytes [pos, pos+len) to dst at `at` (a frame from 'data' chunks, or one that spans blocks). */
  copy(pos: number, len: number, dst: Buffer, at: number): void {
    this.seek(pos);
    const blocks = this.blocks;
    let idx = this.#cIdx;
    let off = this.#cOff;
    while (len > 0) {
      const b = blocks[idx] as Block;
      const left = b.fill - off;
      const n = len < left ? len : left;
      b.buf.copy(dst, at, b.start + off, b.start + off + n);
      at += n;
      len -= n;
      idx++;
      off = 0;
    }
  }
}
