/*
 * The flow cache's backend in the addon (native/flowcache.c): one table per
 * process, so one hub, made when the first bridge turns its cache on.
 */
import * as netdev from '@vswitch/netdev';
import { type FlowCacheBackend, FlowCacheHub } from '../flow-cache.js';

let hub: FlowCacheHub | undefined;

export function addonFlowCache(): FlowCacheHub {
  if (hub !== undefined) return hub;
  const backend: FlowCacheBackend = {
    generations: netdev.flowCacheGenerations(),
    install: (bridge, inHandle, inPort, buf, off, len, outHandle, outPort, l3) =>
      netdev.flowCacheInstall(bridge, inHandle, inPort, buf, off, len, outHandle, outPort, l3) >= 0,
    fold: (out) => netdev.flowCacheFold(out),
    flush: (bridge) => netdev.flowCacheFlush(bridge),
    size: netdev.FLOW_CACHE_SIZE,
    clockOffset: netdev.PERF_NOW_OFFSET,
  };
  hub = new FlowCacheHub(backend);
  return hub;
}

/** Hands what the addon replayed to every bridge (before reading their counters or MAC tables). */
export function foldAddonFlowCache(): void {
  hub?.fold();
}

/** The table's own counts (hits, misses, installs, refusals, entries), for metrics and `show`. */
export function addonFlowCacheStats(): netdev.FlowCacheStats {
  return netdev.flowCacheStats();
}
