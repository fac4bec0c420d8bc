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
   * Every loaded model's version manifest (its sha256, see manifestOf) as it was when the load
   * started, or null if there was none then. An id can be deleted and registered again with other
   * files (on any replica sharing the store, perhaps while this one missed the states between), so
   * a model is "version id" only while the manifest on disk is still the one it was loaded from.
   */
  private manifests = new WeakMap<LoadedModel, string | null>();
  /** Loaded but not yet served (activation in progress); retired if unused for a minute. */
  private prepared = new Map<string, { model: LoadedModel; timer: NodeJS.Timeout }>();

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

  /**
   * Loads (or reuses) a version without serving it; failures leave everything untouched. A served
   * (active or canary) model is reused unless its id now has other files (see servedAsIs).
   */
  async prepare(id: string): Promise<LoadedModel> {
    for (const m of [this.activeModel, this.canaryModel]) if (m?.id === id && this.servedAsIs(m)) return m;
    const ready = this.prepared.get(id);
    if (ready) {
      const manifest = this.manifests.get(ready.model);
      if (manifest != null && manifest === this.manifestOf(id)) return ready.model;
      this.discard(id); // deleted (and perhaps registered again with other files) since it was loaded
    }
    let p = this.loading.get(id);
    if (!p) {
      // Read before loading: if the files change during the load, the entry never matches and is reloaded.
      const manifest = this.manifestOf(id);
      const load: Promise<LoadedModel> = loadVersion(this.store, id, this.batching)
        .then((model) => {
          this.manifests.set(model, manifest);
          const timer = setTimeout(() => {
            if (this.prepared.get(id)?.model === model) this.prepared.delete(id);
            if (model !== this.activeModel && model !== this.canaryModel) model.retire();
          }, 60_000);
          timer.unref();
          // A load discarded meanwhile (its version was deleted) goes to its callers only, never to
          // the cache; the timer still frees it if none of them serves it.
          if (this.loading.get(id) === load) this.prepared.set(id, { model, timer });
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

  /**
   * Whether a served model still is its version as stored: the manifest on disk is the one it was
   * loaded from. A missing manifest (the version deleted, or being registered again) keeps it: it
   * is served until the state names another version, and its replacement is loaded once stored.
   */
  private servedAsIs(model: LoadedModel): boolean {
    const now = this.manifestOf(model.id);
    return now === null || now === this.manifests.get(model);
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
    if (this.activeModel?.id === id && this.servedAsIs(this.activeModel)) return this.activeModel;
    // Not served, or served from files that were since replaced under the same id (deleted and
    // registered again, perhaps while this replica missed the states between): load the stored ones.
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
    if ((this.canaryModel?.id ?? null) === id && (!this.canaryModel || this.servedAsIs(this.canaryModel))) return;
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
