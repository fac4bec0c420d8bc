import { EventEmitter } from 'node:events';
import type { FastifyBaseLogger } from 'fastify';
import { ModelStore } from './model-store.js';
import { loadVersion } from './load-version.js';
import type { LoadedModel } from '../inference/loaded-model.js';

export interface Batching {
  maxBatch: number;
  maxWaitMs: number;
}

/**
 * Holds the models being served. Swaps are atomic: a request pins the model it started with
 * (LoadedModel.use), new requests see the new one, and the old one is freed once drained.
 */
export class ModelManager extends EventEmitter {
  private activeModel: LoadedModel | null = null;
  private canaryModel: LoadedModel | null = null;
  private loading = new Map<string, Promise<LoadedModel>>();

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
    let p = this.loading.get(id);
    if (!p) {
      p = loadVersion(this.store, id, this.batching).finally(() => this.loading.delete(id));
      this.loading.set(id, p);
    }
    return p;
  }

  /** Makes `id` the active model in this process (no state persisted: see the lifecycle service). */
  async serveActive(id: string): Promise<LoadedModel> {
    if (this.activeModel?.id === id) return this.activeModel;
    const next = await this.prepare(id);
    const prev = this.activeModel;
    this.activeModel = next;
    if (this.canaryModel?.id === id) this.canaryModel = null;
    else if (prev && prev !== this.canaryModel) prev.retire();
    this.log.info({ version: id, previous: prev?.id ?? null }, 'active model swapped');
    this.emit('active', id, prev?.id ?? null);
    return next;
  }

  async serveCanary(id: string | null): Promise<void> {
    if ((this.canaryModel?.id ?? null) === id) return;
    const next = id ? await this.prepare(id) : null;
    const prev = this.canaryModel;
    this.canaryModel = next;
    if (prev && prev !== this.activeModel) prev.retire();
  }

  async close(): Promise<void> {
    this.activeModel?.retire();
    this.canaryModel?.retire();
    this.activeModel = null;
    this.canaryModel = null;
  }
}
