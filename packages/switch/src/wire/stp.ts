/*
 * STP/RSTP BPDU view (IEEE 802.1D-2004 clause 9): what a BPDU guard needs to tell a
 * BPDU from other frames to the bridge group address. A BPDU is an 802.3 frame (the
 * type field is a length, at most 1500) to 01:80:C2:00:00:00 with LLC DSAP 0x42,
 * SSAP 0x42, control 0x03 (UI), then protocol identifier 0x0000, a version and a
 * type: 0x00 configuration (35 bytes), 0x80 topology change notification (4 bytes),
 * 0x02 RST/MST (36 bytes and more). One 802.1Q tag before the length is allowed (a
 * trunk may carry tagged BPDUs). This is what Linux's br_stp_rcv takes, plus RST
 * BPDUs, which its kernel STP ignores but which are just as much a bridge talking.
 */
import { ETH, ETH_HLEN, linkLocalGroup } from './ethernet.js';

const F = { LLC_DSAP: 0, LLC_SSAP: 1, LLC_CTRL: 2, PROTO: 3, VERSION: 5, TYPE: 6 } as const;
/** Offsets from the LLC header (the byte after the length field). */
export const BPDU = F;
const LLC_STP = 0x42;
const LLC_UI = 0x03;
const TYPE_CONFIG = 0x00;
const TYPE_TCN = 0x80;
const TYPE_RST = 0x02;
/** Bytes after the LLC header each type needs (from the protocol identifier on). */
const LEN_CONFIG = 35;
const LEN_TCN = 4;
const LEN_RST = 36;
const LLC_HLEN = 3;
const TPID_8021Q = 0x8100;
const MAX_8023_LEN = 1500;

/** bpduKind results. */
export const BPDU_NONE = 0; // not to the bridge group address
export const BPDU_VALID = 1;
export const BPDU_INVALID = 2; // to the bridge group address, but not a BPDU

/** What the frame buf[off, off+len) is to a BPDU guard. */
export function bpduKind(buf: Uint8Array, off: number, len: number): number {
  if (len < ETH_HLEN || linkLocalGroup(buf, off) !== 0) return BPDU_NONE;
  let t = off + ETH.TYPE;
  let lenField = (buf[t] << 8) | buf[t + 1];
  if (lenField === TPID_8021Q) {
    t += 4;
    if (t + 2 > off + len) return BPDU_INVALID;
    lenField = (buf[t] << 8) | buf[t + 1];
  }
  if (lenField > MAX_8023_LEN) return BPDU_INVALID;
  const llc = t + 2;
  const end = off + len;
  if (llc + LLC_HLEN + LEN_TCN > end) return BPDU_INVALID;
  if (buf[llc + F.LLC_DSAP] !== LLC_STP || buf[llc + F.LLC_SSAP] !== LLC_STP || buf[llc + F.LLC_CTRL] !== LLC_UI) return BPDU_INVALID;
  if (buf[llc + F.PROTO] !== 0 || buf[llc + F.PROTO + 1] !== 0) return BPDU_INVALID;
  const have = end - llc - LLC_HLEN;
  const type = buf[llc + F.TYPE];
  if (type === TYPE_TCN) return BPDU_VALID;
  if (type === TYPE_CONFIG) return have >= LEN_CONFIG ? BPDU_VALID : BPDU_INVALID;
  if (type === TYPE_RST) return have >= LEN_RST ? BPDU_VALID : BPDU_INVALID;
  return BPDU_INVALID;
}
