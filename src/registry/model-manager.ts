import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { ModelStore } from './model-store.js';
import { loadVersion } from './load-version.js';
import { sha256 } from './manifest.js';
import type { LoadedModel } from '../inference/loaded-model.js';

export interface Batching {
  maxBatch: number;
  maxWaitMs: number;
  onBatch?: (rows: number) => void;
}

/**
 * Holds the models being served. Swaps are atomic: a request pins the model it started with
 * (LoadedModel.use), new requests see the new one, and the old one is freed once drained.
 */
export class ModelManager extends EventEmitter {
  private activeModel: LoadedModel | null = null;
  private canaryModel: LoadedModel | null = null;
  private loading = new Map<string, Promise<LoadedModel>>();
  /**
   * Loaded but not yet served (activation in progress); retired if unused for a minute. Each entry
   * remembers the version's manifest as it was loaded: an id can be deleted and registered again
   * with other files (on any replica sharing the store), and must not be served from memory then.
   */
  private prepared = new Map<string, { model: LoadedModel; timer: NodeJS.Timeout; manifest: string | null }>();

  constructor(
    readonly store: ModelStore,
    private readonly batching: Batching,
    private readonly log: FastifyBaseLogger,
  ) {
    super();
  }

  get active(): LoadedModel | null {
    return this.activeModel;
  }

  get canary(): LoadedModel | null {
    return this.canaryModel;
  }

  /** Loads (or reuses) a version without serving it; failures leave everything untouched. */
  async prepare(id: string): Promise<LoadedModel> {
    for (const m of [this.activeModel, this.canaryModel]) if (m?.id === id) return m;
    const ready = this.prepared.get(id);
    if (ready) {
      if (ready.manifest !== null && ready.manifest === this.manifestOf(id)) return ready.model;
      this.discard(id); // deleted (and perhaps registered again with other files) since it was loaded
    }
    let p = this.loading.get(id);
    if (!p) {
      // Read before loading: if the files change during the load, the entry never matches and is reloaded.
      const manifest = this.manifestOf(id);
      const load: Promise<LoadedModel> = loadVersion(this.store, id, this.batching)
        .then((model) => {
          const timer = setTimeout(() => {
            if (this.prepared.get(id)?.model === model) this.prepared.delete(id);
            if (model !== this.activeModel && model !== this.canaryModel) model.retire();
          }, 60_000);
          timer.unref();
          // A load discarded meanwhile (its version was deleted) goes to its callers only, never to
          // the cache; the timer still frees it if none of them serves it.
          if (this.loading.get(id) === load) this.prepared.set(id, { model, timer, manifest });
          return model;
        })
        .finally(() => {
          if (this.loading.get(id) === load) this.loading.delete(id);
        });
      this.loading.set(id, load);
      p = load;
    }
    return p;
  }

  /**
   * Forgets a version that is loaded but not served, because it was deleted: its prepared model
   * is dropped and retired (freed once work pinned on it, if any, finishes), and a load in flight
   * is not cached. A served (active or canary) model is never touched.
   */
  discard(id: string): void {
    const entry = this.prepared.get(id);
    if (entry) {
      clearTimeout(entry.timer);
      this.prepared.delete(id);
      if (entry.model !== this.activeModel && entry.model !== this.canaryModel) entry.model.retire();
    }
    this.loading.delete(id);
  }

  /** The version's manifest as stored now (its checksums identify the files), or null if none. */
  private manifestOf(id: string): string | null {
    try {
      return sha256(readFileSync(join(this.store.dir(id), 'manifest.json')));
    } catch {
      return null;
    }
  }

  private take(id: string, model: LoadedModel): void {
    const entry = this.prepared.get(id);
    if (entry?.model === model) {
      clearTimeout(entry.timer);
      this.prepared.delete(id);
    }
  }

  /** Makes `id` the active model in this process (no state persisted: see the lifecycle service). */
  async serveActive(id: string): Promise<LoadedModel> {
    if (this.activeModel?.id === id) return this.activeModel;
    const next = await this.prepare(id);
    this.take(id, next);
    const prev = this.activeModel;
    if (prev === next) return next;
    this.activeModel = next;
    if (this.canaryModel === next) this.canaryModel = null; // promoted
    if (prev && prev !== this.canaryModel) prev.retire(); // freed once its in-flight requests finish
    this.log.info({ version: id, previous: prev?.id ?? null }, 'active model swapped');
    this.emit('active', id, prev?.id ?? null);
    return next;
  }

  async serveCanary(id: string | null): Promise<void> {
    if ((this.canaryModel?.id ?? null) === id) return;
    const next = id ? await this.prepare(id) : null;
    if (id && next) this.take(id, next);
    const prev = this.canaryModel;
    this.canaryModel = next;
    if (prev && prev !== this.activeModel) prev.retire();
  }

  async close(): Promise<void> {
    for (const { model, timer } of this.prepared.values()) {
      clearTimeout(timer);
      if (model !== this.activeModel && model !== this.canaryModel) model.retire();
    }
    this.prepared.clear();
    this.activeModel?.retire();
    this.canaryModel?.retire();
    this.activeModel = null;
    this.canaryModel = null;
  }
}
