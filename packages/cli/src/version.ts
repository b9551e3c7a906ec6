/*
 * The package's version, read from its package.json at run time (one place to bump;
 * `vswitch --version`, `ping`, the man page).
 */
import { createRequire } from 'node:module';

export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
