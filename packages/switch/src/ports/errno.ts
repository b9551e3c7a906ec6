import { constants } from 'node:os';

const names = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));

/** 'EBADFD' for 77; keeps log lines and `show` readable. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}
