/*
 * Flow cache metrics (README "Flow cache"): per bridge with the cache on, what it
 * installed, replayed (as folded into the port counters) and invalidated; for the
 * addon's one table, its misses and live entries. Registered by metrics.ts like
 * its own families, refilled at each scrape after a fold.
 */
import type { Bridge } from '@vswitch/switch';
import { addonFlowCacheStats, foldAddonFlowCache } from '@vswitch/switch/ports';

type Emit = (labels: Record<string, string>, value: number) => void;
type Family = (name: string, help: string, labelNames: readonly string[], fill: (emit: Emit) => void) => void;

export function registerFlowCacheMetrics(counter: Family, gauge: Family, bridges: () => Iterable<Bridge>): void {
  const perBridge = (name: string, help: string, value: (br: Bridge) => number): void => {
    counter(name, help, ['bridge'], (emit) => {
      foldAddonFlowCache();
      for (const br of bridges()) if (br.flowCache || br.flowCacheCounters.installs > 0) emit({ bridge: br.name }, value(br));
    });
  };
  perBridge('vswitch_flow_cache_hits_total', 'Frames the addon replayed from the flow cache, without the bridge pipeline (counted in the ports\' counters too).', (br) => br.flowCacheCounters.hits);
  perBridge('vswitch_flow_cache_installs_total', 'Forwarding decisions the bridge installed in the flow cache.', (br) => br.flowCacheCounters.installs);
  perBridge('vswitch_flow_cache_invalidations_total', 'Changes that made every flow cache entry of the bridge stale (MAC table, ports, VLANs, guards, rates).', (br) => br.flowCacheCounters.invalidations);
  // Every bridge, on or off: the default (on) and a bridge turned off are both visible.
  gauge('vswitch_flow_cache_enabled', 'Whether the bridge\'s flow cache is on (1, the default) or off (0: flowCache: false or bridge set BR flow-cache off).', ['bridge'],
    (emit) => { for (const br of bridges()) emit({ bridge: br.name }, br.flowCache ? 1 : 0); });
  counter('vswitch_flow_cache_misses_total', 'Batches (or their rest) the addon\'s flow cache handed to the bridge pipeline after a probe missed.', [], (emit) => emit({}, addonFlowCacheStats().misses));
  gauge('vswitch_flow_cache_entries', 'Flow cache entries that can hit now (all bridges).', [], (emit) => emit({}, addonFlowCacheStats().entries));
}
