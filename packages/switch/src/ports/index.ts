// The port I/O of devices: TAPs and attached interfaces over the native addon, socket
// ports over Node's net (Unix stream sockets), and the addon's segmenter the daemon
// gives its bridges. Kept apart from the pure core (bridge, ingress, forward, egress)
// so that the core and its tests never need the addon built; the router's port is
// in @vswitch/nat.
export * from './tap.js';
export * from './attach.js';
export * from './socket.js';
export * from './errno.js';
export * from './segment.js';
export * from './vxlan-io.js';
export * from './flow-cache-io.js';
export { addonSparseFirst } from './handle-io.js';
