/**
 * The read-loop share keys (README "Fair share"), as zod schemas shared by a bridge's
 * config and the VXLAN underlay's: each value goes through the same parser the CLI uses,
 * so a bad value reads the same in a config file, a reload and `bridge set`.
 */
import { z } from 'zod';
import { parseReadFrames, parseReadQuantum, parseReadShare } from '@vswitch/switch';

/** A schema whose value is `parse(v)`; what `parse` throws becomes the key's issue. */
function parsedBy<I extends z.ZodType, T>(input: I, parse: (v: z.output<I>) => T) {
  return input.transform((v, ctx): T => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** `readQuantum`: bytes per port per round under `readShare: bytes` ("256kb", or "off"/0). */
export const ReadQuantumSchema = parsedBy(z.union([z.number(), z.string()]), parseReadQuantum);
/** `readShare`: what a port's share of a read-loop round counts, bytes or frames. */
export const ReadShareSchema = parsedBy(z.unknown(), parseReadShare);
/** `readFrames`: frames per port per round under `readShare: frames`, or "off"/0. */
export const ReadFramesSchema = parsedBy(z.union([z.number(), z.string()]), parseReadFrames);
