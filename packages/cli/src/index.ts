export * from './config.js';
export * from './errors.js';
export * from './client.js';
export { Vswitch } from './daemon/service.js';
