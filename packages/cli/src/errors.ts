/*
 * Errors with stable codes. Misuse and bad input throw a VswitchError; the control
 * socket sends `{code, message}` and the CLI prints the message on one line.
 */
export class VswitchError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export function errorCode(e: unknown): string {
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'EINTERNAL';
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
