import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { buildManifest, verifyManifest, type Manifest } from './manifest.js';
import { parseFeatureSpec, type FeatureSpec } from '../preprocessing/feature-spec.js';
import { parseJsonText } from '../lib/json-text.js';

export interface VersionCard {
  id: string;
  created: string;
  source: 'trained' | 'imported';
  dataFingerprint?: string;
  parameters?: Record<string, unknown>;
  headline?: { auc?: number; f1?: number; brier?: number; logLoss?: number };
  notes?: string;
}

export interface StoreState {
  active: string | null;
  canary: { version: string; percent: number; mode: 'split' | 'shadow' } | null;
  history: { at: string; action: string; version: string | null; previous: string | null; by: string; reason?: string }[];
  /** Versions a replica is deleting (id → claim time, ms): no change may name them meanwhile. */
  deleting?: Record<string, number>;
}

const VERSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * Model store on disk:
 *   <root>/state.json            active/canary version and activation history
 *   <root>/versions/<id>/        immutable: model.json, shards, feature-spec.json, metrics.json, card.json, manifest.json
 * Versions are written to a temp dir and renamed into place, so a crash never exposes half a version.
 */
/** Temp dirs younger than this may belong to a replica still writing them. */
const TEMP_MAX_AGE_MS = 60 * 60_000;

export class ModelStore {
  readonly versionsDir: string;

  constructor(readonly root: string) {
    this.versionsDir = join(root, 'versions');
    mkdirSync(this.versionsDir, { recursive: true });
  }

  static isValidId(id: string): boolean {
    return VERSION_ID.test(id);
  }

  dir(id: string): string {
    if (!ModelStore.isValidId(id)) throw new Error(`invalid version id "${id}"`);
    return join(this.versionsDir, id);
  }

  has(id: string): boolean {
    return ModelStore.isValidId(id) && existsSync(join(this.dir(id), 'manifest.json'));
  }

  listIds(): string[] {
    return readdirSync(this.versionsDir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && !d.name.startsWith('.') && existsSync(join(this.versionsDir, d.name, 'manifest.json')))
      .map((d) => d.name)
      .sort();
  }

  readJson<T>(id: string, file: string): T {
    return parseJsonText<T>(readFileSync(join(this.dir(id), file), 'utf8'));
  }

  card(id: string): VersionCard {
    return this.readJson<VersionCard>(id, 'card.json');
  }

  spec(id: string): FeatureSpec {
    return parseFeatureSpec(this.readJson(id, 'feature-spec.json'));
  }

  metrics<T = Record<string, unknown>>(id: string): T | null {
    return existsSync(join(this.dir(id), 'metrics.json')) ? this.readJson<T>(id, 'metrics.json') : null;
  }

  verify(id: string): void {
    verifyManifest(this.dir(id), this.readJson<Manifest>(id, 'manifest.json'));
  }

  /** Writes a new immutable version atomically; adds card.json and manifest.json. */
  writeVersion(card: VersionCard, files: Map<string, Buffer>): string {
    const id = card.id;
    if (!ModelStore.isValidId(id)) throw new Error(`invalid version id "${id}"`);
    if (existsSync(this.dir(id))) throw new Error(`version ${id} already exists`);
    const all = new Map(files);
    all.set('card.json', Buffer.from(JSON.stringify(card, null, 2) + '\n'));
    const manifest = buildManifest(id, all);
    const tmp = join(this.versionsDir, `.tmp-${id}-${randomBytes(4).toString('hex')}`);
    mkdirSync(tmp);
    try {
      for (const [name, buf] of all) writeFileSync(join(tmp, name), buf);
      writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      renameSync(tmp, this.dir(id));
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    return id;
  }

  deleteVersion(id: string): void {
    const dir = this.dir(id);
    const trash = join(this.versionsDir, `.tmp-del-${id}-${randomBytes(4).toString('hex')}`);
    renameSync(dir, trash); // disappears from listings at once, even if removal is slow
    rmSync(trash, { recursive: true, force: true });
  }

  /**
   * Removes temp dirs left by a crash mid-write. Only old ones: on a store volume shared by
   * replicas, a fresh one is another replica's import or training save in progress.
   */
  sweepTemp(olderThanMs = TEMP_MAX_AGE_MS): void {
    const cutoff = Date.now() - olderThanMs;
    for (const d of readdirSync(this.versionsDir)) {
      if (!d.startsWith('.tmp-')) continue;
      const path = join(this.versionsDir, d);
      try {
        if (statSync(path).mtimeMs < cutoff) rmSync(path, { recursive: true, force: true });
      } catch {
        /* removed meanwhile */
      }
    }
  }

  readState(): StoreState {
    const path = join(this.root, 'state.json');
    const empty: StoreState = { active: null, canary: null, history: [] };
    if (!existsSync(path)) return empty;
    try {
      return { ...empty, ...parseJsonText<Partial<StoreState>>(readFileSync(path, 'utf8')) };
    } catch (err) {
      throw new Error(`${path} is not readable JSON: ${(err as Error).message}`);
    }
  }

  /**
   * Writes state.json (synced, then renamed into place). `ifNewer` (the Redis mirror): only when
   * `state` is newer than the file, by its `revision` (bumped by every fleet change), so a slow
   * read finishing after a newer change never writes the older state back; a state that is not
   * newer (the same one read again on every poll) is not rewritten either. Returns whether it wrote.
   */
  writeState(state: StoreState, { ifNewer = false }: { ifNewer?: boolean } = {}): boolean {
    const path = join(this.root, 'state.json');
    const text = JSON.stringify(state, null, 2) + '\n';
    if (ifNewer) {
      let current: string | null = null;
      try {
        current = readFileSync(path, 'utf8');
      } catch {
        /* no mirror yet */
      }
      if (current === text) return false;
      if (current !== null) {
        let fileRevision: unknown;
        try {
          fileRevision = (JSON.parse(current) as { revision?: unknown }).revision;
        } catch {
          /* unreadable: replaced */
        }
        const revision = (state as { revision?: unknown }).revision;
        // A state without a revision (written by an older replica) cannot be ordered: written if it differs.
        if (typeof fileRevision === 'number' && typeof revision === 'number' && revision <= fileRevision) return false;
      }
    }
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    // Synced before the rename: after a power loss the file is the old state or the new, never empty.
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    return true;
  }

  /** The version to serve: the recorded active one, else the only one, else the newest. */
  resolveActive(): string | null {
    const state = this.readState();
    if (state.active && this.has(state.active)) return state.active;
    const ids = this.listIds();
    if (ids.length === 0) return null;
    return ids.map((id) => ({ id, created: this.card(id).created })).sort((a, b) => a.created.localeCompare(b.created)).at(-1)!.id;
  }
}

/**
 * `<UTC second>-<data fingerprint>-<random>`: sorts by time, names the data, and stays unique when
 * two trainings of the same file finish in the same second.
 */
export function newVersionId(fingerprint = ''): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const random = randomBytes(3).toString('hex');
  return fingerprint ? `${stamp}-${fingerprint.slice(0, 6)}-${random}` : `${stamp}-${random}`;
}
