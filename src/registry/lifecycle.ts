import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { ModelStore, StoreState } from './model-store.js';
import type { ModelManager } from './model-manager.js';
import type { FleetState } from './fleet-state.js';
import type { LoadedModel } from '../inference/loaded-model.js';
import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import { AppError, conflict, notFound } from '../lib/errors.js';
import { canaryIncompatibility } from './canary-contract.js';

/** How long a version's delete claim in the fleet state holds (the delete itself takes milliseconds). */
const DELETE_CLAIM_MS = 60_000;

export interface Actor {
  by: string;
  reason?: string;
}

export interface ShadowStats {
  version: string;
  n: number;
  meanAbsDiff: number;
  labelAgreement: number;
  incompatible: number;
}

/**
 * Model lifecycle: activate, roll back, canary/shadow, promote/abort. Changes are validated by
 * loading the version here first (checksums, spec, warm-up), then written to the fleet state;
 * every replica (this one included) applies the state through reconcile().
 */
export class Lifecycle {
  private reconciling: Promise<void> = Promise.resolve();
  private pendingReconcile = false;
  private shadow = { version: '', n: 0, absDiff: 0, agree: 0, incompatible: 0 };
  private activationListeners: ((version: string, action: string) => void)[] = [];

  constructor(
    private readonly store: ModelStore,
    private readonly models: ModelManager,
    private readonly fleet: FleetState,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** Called on the replica where an activation, rollback or promotion was requested, once it serves it. */
  onActivated(listener: (version: string, action: string) => void): void {
    this.activationListeners.push(listener);
  }

  private activated(version: string, action: string): void {
    for (const l of this.activationListeners) l(version, action);
  }

  state(): Promise<StoreState> {
    return this.fleet.read();
  }

  /**
   * Runs one state change at a time in this process: a change loads its model first, and one that
   * read the state before another finished would otherwise write back what it read, undoing it.
   * Across replicas FleetState.update's compare-and-set does the same.
   */
  private exclusive<T>(action: () => Promise<T>): Promise<T> {
    const run = this.changes.then(action, action);
    this.changes = run.catch(() => {});
    return run;
  }

  private changes: Promise<unknown> = Promise.resolve();

  /**
   * `ifActive`: activate only if that version is still the active one (409 `active_changed`
   * otherwise), for decisions made against it, such as a retrain job's "if-better" comparison.
   */
  activate(id: string, actor: Actor, opts: { ifActive?: string | null } = {}): Promise<StoreState> {
    return this.exclusive(async () => {
      const model = await this.loadOrExplain(id);
      let previous: string | null = null;
      const state = await this.fleet.update((s) => {
        this.assertStillStored(id, s);
        if (opts.ifActive !== undefined && s.active !== opts.ifActive) {
          throw new AppError(409, 'active_changed', `the active version is now ${s.active ?? 'none'}, not ${opts.ifActive ?? 'none'}`);
        }
        previous = s.active;
        s.active = id;
        if (s.canary?.version === id) s.canary = null;
        s.history.push({ at: new Date().toISOString(), action: 'activate', version: id, previous, by: actor.by, reason: actor.reason });
        if (previous !== id) this.endIncompatibleCanary(s, id, model.spec, actor);
      }, this.completeLate(() => previous !== id, id, 'activate'));
      await this.reconcile();
      if (previous !== id) this.activated(id, 'activate');
      return state;
    });
  }

  /** Re-activates the version that was active before the current one. */
  rollback(actor: Actor): Promise<StoreState> {
    return this.exclusive(async () => {
      const target = rollbackTarget(await this.fleet.read());
      if (!this.store.has(target.previous)) throw conflict(`previous version ${target.previous} no longer exists`);
      const model = await this.loadOrExplain(target.previous);
      const state = await this.fleet.update((s) => {
        // Another replica may have changed the state while the model loaded: roll back only from
        // the state the target was chosen from.
        const now = rollbackTarget(s);
        if (now.current !== target.current || now.previous !== target.previous) throw conflict('the model state changed meanwhile: try again');
        this.assertStillStored(target.previous, s);
        s.active = target.previous;
        if (s.canary?.version === target.previous) s.canary = null;
        s.history.push({ at: new Date().toISOString(), action: 'rollback', version: target.previous, previous: target.current, by: actor.by, reason: actor.reason });
        this.endIncompatibleCanary(s, target.previous, model.spec, actor);
      }, this.completeLate(() => true, target.previous, 'rollback'));
      await this.reconcile();
      this.activated(target.previous, 'rollback');
      return state;
    });
  }

  startCanary(id: string, opts: { percent: number; mode: 'split' | 'shadow' }, actor: Actor): Promise<StoreState> {
    return this.exclusive(async () => {
      // A split canary answers real requests: it must accept every one the active version accepts
      // (checked against the active version in the state actually written). A shadow answers none.
      const refuseActive = (s: StoreState) => {
        if (s.active === id) throw conflict(`version ${id} is already active`);
      };
      const refuseIncompatible = (s: StoreState, spec: FeatureSpec) => {
        // The version that will serve beside it: the recorded one, else the one reconcile falls back to.
        const active = s.active && this.store.has(s.active) ? s.active : this.store.resolveActive();
        if (!active) return;
        const gap = canaryIncompatibility(this.store.spec(active), spec);
        if (gap) throw new AppError(409, 'incompatible_canary', `version ${id} cannot be a canary of ${active}: it would refuse requests ${active} accepts (${gap.summary})`, gap.issues);
      };
      refuseActive(await this.fleet.read());
      const model = await this.loadOrExplain(id);
      const state = await this.fleet.update((s) => {
        refuseActive(s);
        if (opts.mode === 'split') refuseIncompatible(s, model.spec);
        this.assertStillStored(id, s);
        const at = new Date().toISOString();
        s.canary = { version: id, percent: opts.mode === 'shadow' ? 0 : opts.percent, mode: opts.mode, since: at };
        s.history.push({ at, action: `canary:${opts.mode}`, version: id, previous: s.active, by: actor.by, reason: actor.reason });
      });
      this.shadow = { version: id, n: 0, absDiff: 0, agree: 0, incompatible: 0 };
      await this.reconcile();
      return state;
    });
  }

  promoteCanary(actor: Actor): Promise<StoreState> {
    return this.exclusive(async () => {
      let promoted = '';
      const state = await this.fleet.update((s) => {
        if (!s.canary) throw conflict('no canary to promote');
        promoted = s.canary.version;
        s.history.push({ at: new Date().toISOString(), action: 'promote', version: promoted, previous: s.active, by: actor.by, reason: actor.reason });
        s.active = promoted;
        s.canary = null;
      }, this.completeLate(() => true, () => promoted, 'promote'));
      await this.reconcile();
      this.activated(promoted, 'promote');
      return state;
    });
  }

  abortCanary(actor: Actor): Promise<StoreState> {
    return this.exclusive(async () => {
      const state = await this.fleet.update((s) => {
        if (!s.canary) throw conflict('no canary to abort');
        s.history.push({ at: new Date().toISOString(), action: 'abort', version: s.canary.version, previous: s.active, by: actor.by, reason: actor.reason });
        s.canary = null;
      });
      await this.reconcile();
      return state;
    });
  }

  /** Deletes an inactive version; never while a change in this process is loading it. */
  deleteVersion(id: string): Promise<void> {
    return this.exclusive(async () => {
      if (!this.store.has(id)) throw notFound(`version ${id}`);
      if (this.models.active?.id === id) throw conflict(`version ${id} is active`);
      // Claimed in the fleet state first, by compare-and-set: a change naming the version on another
      // replica either lands before the claim (and the delete is refused here) or sees it (and is
      // refused there). The claim lapses by itself after DELETE_CLAIM_MS should its removal fail.
      await this.fleet.update((s) => {
        if (s.active === id) throw conflict(`version ${id} is active`);
        if (s.canary?.version === id) throw conflict(`version ${id} is the canary`);
        s.deleting = { ...s.deleting, [id]: Date.now() };
      });
      try {
        this.store.deleteVersion(id);
      } finally {
        // A change refused after loading it (409, or 503 while Redis is down) leaves it prepared:
        // were it kept, the id registered again with other files would be served from memory.
        this.models.discard(id);
        await this.fleet
          .update((s) => {
            const { [id]: _done, ...rest } = s.deleting ?? {};
            if (Object.keys(rest).length) s.deleting = rest;
            else delete s.deleting;
          })
          .catch((err: Error) => this.log.warn({ version: id, err: err.message }, 'could not clear the delete claim; it lapses by itself'));
      }
    });
  }

  /**
   * After the active version changed to `activeId` (activation, rollback) with a split canary in
   * place: the canary keeps running if it still accepts every request the new active version
   * accepts, else it ends in the same state change (recorded in the history). Rollback, the way
   * out of an incident, is never refused because of a canary. A shadow answers no requests: kept.
   */
  private endIncompatibleCanary(s: StoreState, activeId: string, activeSpec: FeatureSpec, actor: Actor): void {
    const canary = s.canary;
    if (!canary || canary.mode !== 'split' || !this.store.has(canary.version)) return;
    const gap = canaryIncompatibility(activeSpec, this.store.spec(canary.version));
    if (!gap) return;
    s.canary = null;
    s.history.push({
      at: new Date().toISOString(),
      action: 'abort',
      version: canary.version,
      previous: activeId,
      by: actor.by,
      reason: `canary ended: it would refuse requests the new active version ${activeId} accepts (${gap.summary})`,
    });
  }

  /** A version deleted (on any replica) while its change was loading it must not become state. */
  /**
   * For a change answered "outcome unknown" that lands later: apply it here and run what follows
   * an activation (persona reset, re-scoring), as the answered path does.
   */
  private completeLate(changed: () => boolean, version: string | (() => string), action: string): { onLateApply: () => void } {
    return {
      onLateApply: () => {
        const id = typeof version === 'function' ? version() : version;
        void this.reconcile().then(() => {
          if (changed()) this.activated(id, action);
        });
      },
    };
  }

  private assertStillStored(id: string, s: StoreState): void {
    if (!this.store.has(id)) throw conflict(`version ${id} was deleted meanwhile`);
    const claimed = s.deleting?.[id];
    if (claimed !== undefined && Date.now() - claimed < DELETE_CLAIM_MS) throw conflict(`version ${id} is being deleted`);
  }

  /** Applies the fleet state to this replica; concurrent calls coalesce. Never throws. */
  reconcile(): Promise<void> {
    if (this.pendingReconcile) return this.reconciling;
    this.pendingReconcile = true;
    this.reconciling = this.reconciling.then(async () => {
      this.pendingReconcile = false;
      try {
        const state = await this.fleet.read();
        const recordedMissing = state.active && !this.store.has(state.active) ? state.active : null;
        const active = recordedMissing || !state.active ? this.store.resolveActive() : state.active;
        // A replica whose store lacks the fleet's version (a volume not yet synced, a hand-edited
        // state.json) serves another one: say so, once per missing version, rather than silently.
        if (recordedMissing !== this.missingActive) {
          if (recordedMissing) {
            this.log.error(
              { recorded: recordedMissing, serving: active ?? null },
              `the recorded active version ${recordedMissing} is not in this replica's store; ${active ? `serving ${active} (the newest) instead` : 'no model is serving'}`,
            );
          }
          this.missingActive = recordedMissing;
        }
        if (active) {
          await this.models.serveActive(active).catch((err: Error) => {
            throw new Error(`version ${active} cannot be served: ${err.message}`);
          });
          if (!state.active) await this.adopt(active);
        }
        let canary = state.canary && this.store.has(state.canary.version) ? state.canary : null;
        // Changes made here never write such a state, but one written otherwise (an older replica,
        // a hand-edited state.json) must not route requests to a canary that would refuse them.
        if (canary?.mode === 'split' && this.models.active) {
          const gap = canaryIncompatibility(this.models.active.spec, this.store.spec(canary.version));
          const key = `${this.models.active.id} ${canary.version}`;
          if (gap) {
            if (this.refusedCanary !== key) this.log.error({ canary: canary.version, active: this.models.active.id, differences: gap.summary }, 'not serving the canary: it would refuse requests the active version accepts');
            this.refusedCanary = key;
            canary = null;
          }
        }
        await this.models.serveCanary(canary?.version ?? null);
        // A new shadow session starts from zero on every replica, not only on the one that started it.
        const prev = this.canaryConfig;
        if (canary?.mode === 'shadow' && (prev?.mode !== 'shadow' || prev.version !== canary.version || prev.since !== canary.since)) {
          this.shadow = { version: canary.version, n: 0, absDiff: 0, agree: 0, incompatible: 0 };
        }
        this.canaryConfig = canary;
      } catch (err) {
        // Logged when the failure first appears or changes, not on every 2 s poll.
        const message = (err as Error).message;
        if (message !== this.lastReconcileError) {
          const serving = this.models.active?.id;
          this.log.error({ err: message, serving: serving ?? null }, serving ? `could not apply model state; still serving ${serving}` : 'could not apply model state; no model is serving');
        }
        this.lastReconcileError = message;
        return;
      }
      this.lastReconcileError = '';
    });
    return this.reconciling;
  }

  /**
   * Records the version served by default (no active version was recorded: a store without
   * state.json) as the active one. Otherwise "the newest version" would move to each version
   * imported, scanned or retrained later, and serve it without anyone activating it.
   */
  private async adopt(id: string): Promise<void> {
    try {
      await this.fleet.update((s) => {
        if (s.active) return; // activated meanwhile (here or on another replica)
        s.active = id;
        s.history.push({ at: new Date().toISOString(), action: 'activate', version: id, previous: null, by: 'service', reason: 'no active version was recorded: serving the newest, recorded so later versions wait for an activation' });
      });
      this.log.info({ version: id }, 'no active version was recorded; recorded the one served');
    } catch (err) {
      // Redis down: served all the same, recorded at a later reconcile.
      this.log.warn({ err: (err as Error).message, version: id }, 'could not record the version served as active; will retry');
    }
  }

  canaryConfig: StoreState['canary'] = null;
  /** The recorded active version this store lacks, as last logged (null: none missing). */
  private missingActive: string | null = null;
  /** The last reconcile failure logged ('' after a success). */
  private lastReconcileError = '';
  /** Active and canary ids of the incompatible canary last logged by reconcile (logged once, not every poll). */
  private refusedCanary = '';

  /** Picks the model for a request: sticky per userId (hashed), random without one. */
  route(userId: string | undefined): LoadedModel | null {
    const canary = this.models.canary;
    const cfg = this.canaryConfig;
    if (canary && cfg && cfg.mode === 'split' && cfg.percent > 0 && canary.id === cfg.version) {
      const bucket = userId === undefined ? Math.random() * 100 : userBucket(userId);
      if (bucket < cfg.percent) return canary;
    }
    return this.models.active;
  }

  get shadowing(): LoadedModel | null {
    const cfg = this.canaryConfig;
    return cfg?.mode === 'shadow' && this.models.canary?.id === cfg.version ? this.models.canary : null;
  }

  recordShadow(version: string, activeP: number, activeLabel: boolean, shadowP: number, shadowLabel: boolean): void {
    if (this.shadow.version !== version) this.shadow = { version, n: 0, absDiff: 0, agree: 0, incompatible: 0 };
    this.shadow.n++;
    this.shadow.absDiff += Math.abs(activeP - shadowP);
    if (activeLabel === shadowLabel) this.shadow.agree++;
  }

  recordShadowIncompatible(version: string): void {
    if (this.shadow.version !== version) this.shadow = { version, n: 0, absDiff: 0, agree: 0, incompatible: 0 };
    this.shadow.incompatible++;
  }

  shadowStats(version: string): ShadowStats {
    const s = this.shadow.version === version ? this.shadow : { n: 0, absDiff: 0, agree: 0, incompatible: 0 };
    return { version, n: s.n, meanAbsDiff: s.n ? s.absDiff / s.n : 0, labelAgreement: s.n ? s.agree / s.n : 0, incompatible: s.incompatible };
  }

  private async loadOrExplain(id: string): Promise<LoadedModel> {
    if (!this.store.has(id)) throw notFound(`version ${id}`);
    try {
      return await this.models.prepare(id);
    } catch (err) {
      throw new AppError(422, 'load_failed', `version ${id} cannot be served: ${(err as Error).message}`);
    }
  }
}

/** Stable 0–100 bucket for a userId (sha256, first 4 bytes). */
export function userBucket(userId: string): number {
  return (createHash('sha256').update(userId).digest().readUInt32BE(0) / 0x1_0000_0000) * 100;
}

/** The version a rollback returns to: the one active before the current one. */
function rollbackTarget(state: StoreState): { current: string | null; previous: string } {
  const current = state.active;
  // Re-activating the active version records previous === current: skip such entries.
  const previous = [...state.history]
    .reverse()
    .find((h) => h.version === current && h.previous !== current && (h.action === 'activate' || h.action === 'rollback' || h.action === 'promote'))?.previous;
  if (!previous) throw conflict('no previous version to roll back to');
  return { current, previous };
}
