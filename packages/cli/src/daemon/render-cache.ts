/*
 * One metrics render shared by every scrape of a short interval. Rendering reads
 * every counter of every port and router and formats them all: its cost grows with
 * the switch, not with the scraper, and it runs on the forwarding loop. So however
 * many scrapes arrive, the text is rendered at most once per `intervalMs`:
 * - no render running and the last text younger than the interval: the cached
 *   text (source 'cache');
 * - a render running: wait for it and take its text (source 'cache': it cost no
 *   render of its own);
 * - otherwise: start a render (source 'render'); its text is fresh for
 *   `intervalMs` from the moment it finished.
 * A failed render is not cached: its waiters get the error, the next scrape tries
 * again. An interval of 0 still shares a running render between concurrent scrapes.
 * `clear()` drops the cached text: the daemon calls it after each command that
 * changes the switch, so an operator's change shows at the next scrape.
 *
 * The cache lives in the metrics worker thread, whose render asks the main thread
 * for the text (metrics-worker.ts). The worker runs this class from its source
 * text (Function.prototype.toString), so it must stay self-contained: no imports,
 * nothing from this module's scope, only globals (performance).
 */

export interface Rendered {
  text: string;
  source: 'render' | 'cache';
}

export interface RenderCacheStats {
  renders: number;
  renderErrors: number;
  /** Scrapes that started the render they were served. */
  rendered: number;
  /** Scrapes served a text they did not render (cached, or shared with a running render). */
  cached: number;
  /** How long the last finished render took, in ms. */
  lastRenderMs: number;
}

export class RenderCache {
  readonly stats: RenderCacheStats = { renders: 0, renderErrors: 0, rendered: 0, cached: 0, lastRenderMs: 0 };
  #text: string | undefined;
  #at = 0;
  #running: Promise<string> | undefined;

  constructor(
    private readonly render: () => Promise<string>,
    public intervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  async get(): Promise<Rendered> {
    if (this.#running !== undefined) {
      const text = await this.#running;
      this.stats.cached++;
      return { text, source: 'cache' };
    }
    if (this.#text !== undefined && this.now() - this.#at < this.intervalMs) {
      this.stats.cached++;
      return { text: this.#text, source: 'cache' };
    }
    const started = this.now();
    this.stats.renders++;
    let running: Promise<string>;
    try {
      running = this.render();
    } catch (e) {
      running = Promise.reject(e);
    }
    this.#running = running;
    try {
      const text = await running;
      this.#text = text;
      this.#at = this.now();
      this.stats.lastRenderMs = this.#at - started;
      this.stats.rendered++;
      return { text, source: 'render' };
    } catch (e) {
      this.stats.renderErrors++;
      throw e;
    } finally {
      this.#running = undefined;
    }
  }

  /** Forgets the cached text (the next scrape renders). */
  clear(): void {
    this.#text = undefined;
  }
}
