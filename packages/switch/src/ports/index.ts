// Port I/O over the native addon; kept apart from the pure core so that the core
// (and its tests) never needs the addon built.
export * from './tap.js';
export * from './attach.js';
export * from './socket.js';
export * from './errno.js';
export * from './segment.js';
