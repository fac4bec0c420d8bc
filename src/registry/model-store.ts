import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { buildManifest, verifyManifest, type Manifest } from './manifest.js';
import { parseFeatureSpec, type FeatureSpec } from '../preprocessing/feature-spec.js';
import { parseJsonText } from '../lib/json-text.js';
import { AppError, unavailable } from '../lib/errors.js';
import { z } from 'zod';

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
  /** `since`: when this canary was started (a restart of the same version and mode is a new session). */
  canary: { version: string; percent: number; mode: 'split' | 'shadow'; since?: string } | null;
  history: { at: string; action: string; version: string | null; previous: string | null; by: string; reason?: string }[];
  /** Versions a replica is deleting (id → claim time, ms): no change may name them meanwhile. */
  deleting?: Record<string, number>;
}

const VERSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

const CardSchema = z.looseObject({
  id: z.string(),
  created: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'expected an ISO date'),
  source: z.enum(['trained', 'imported']),
});

/** state.json as the service writes it; a hand-edited file that is not is refused with the reason. */
const StateSchema = z.looseObject({
  active: z.string().nullable().default(null),
  canary: z.looseObject({ version: z.string(), percent: z.number(), mode: z.enum(['split', 'shadow']) }).nullable().default(null),
  history: z.array(z.looseObject({ at: z.string(), action: z.string(), version: z.string().nullable(), previous: z.string().nullable(), by: z.string() })).default([]),
  deleting: z.record(z.string(), z.number()).optional(),
});

/** A version whose files cannot be read as the service writes them (hand-copied, edited or damaged): 422. */
export const unreadableVersion = (id: string, file: string, reason: string) => new AppError(422, 'version_unreadable', `version ${id}: ${file} ${reason}`);

/** What is wrong, in one line: a zod error's issues with their paths, else the error's message. */
export const problemOf = (err: unknown) =>
  err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.') || 'value'}: ${i.message}`).join('; ') : (err as Error).message;

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

  /**
   * Registered versions: directories (or links to them) named by a valid id, holding a manifest.
   * Others (a copy named "v1 (copy)", temp dirs) are not versions; scan reports the unregistered.
   */
  listIds(): string[] {
    return this.versionDirs()
      .filter((name) => ModelStore.isValidId(name) && existsSync(join(this.versionsDir, name, 'manifest.json')))
      .sort();
  }

  /** Names under versions/ that are directories or links to directories, except dot-names (temp dirs). */
  versionDirs(): string[] {
    return readdirSync(this.versionsDir, { withFileTypes: true })
      .filter((d) => !d.name.startsWith('.') && (d.isDirectory() || (d.isSymbolicLink() && isDirectory(join(this.versionsDir, d.name)))))
      .map((d) => d.name);
  }

  readJson<T>(id: string, file: string): T {
    return parseJsonText<T>(readFileSync(join(this.dir(id), file), 'utf8'));
  }

  /** A file of a version, read as JSON and checked by `parse`; anything wrong is unreadableVersion (422). */
  private readChecked<T>(id: string, file: string, parse: (raw: unknown) => T): T {
    let raw: unknown;
    try {
      raw = this.readJson(id, file);
    } catch (err) {
      throw unreadableVersion(id, file, (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `is not readable JSON: ${(err as Error).message}`);
    }
    try {
      return parse(raw);
    } catch (err) {
      throw unreadableVersion(id, file, `is not valid: ${problemOf(err)}`);
    }
  }

  card(id: string): VersionCard {
    return this.readChecked(id, 'card.json', (raw) => CardSchema.parse(raw) as VersionCard);
  }

  spec(id: string): FeatureSpec {
    return this.readChecked(id, 'feature-spec.json', parseFeatureSpec);
  }

  metrics<T = Record<string, unknown>>(id: string): T | null {
    if (!existsSync(join(this.dir(id), 'metrics.json'))) return null;
    return this.readChecked(id, 'metrics.json', (raw) => z.record(z.string(), z.unknown()).parse(raw) as T);
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
    let raw: unknown;
    try {
      raw = parseJsonText(readFileSync(path, 'utf8'));
    } catch (err) {
      throw unavailable(`the model store's ${path} is not readable JSON (${(err as Error).message}): fix it, or remove it to serve the newest version`);
    }
    const state = StateSchema.safeParse(raw);
    if (!state.success) throw unavailable(`the model store's ${path} is not a valid state (${problemOf(state.error)}): fix it, or remove it to serve the newest version`);
    return state.data as StoreState;
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

  /** The version to serve: the recorded active one, else the only one, else the newest (of those whose card reads). */
  resolveActive(): string | null {
    const state = this.readState();
    if (state.active && this.has(state.active)) return state.active;
    const dated = this.listIds().flatMap((id) => {
      try {
        return [{ id, created: Date.parse(this.card(id).created) }];
      } catch {
        return []; // an unreadable card: not a version to serve unasked
      }
    });
    return dated.sort((a, b) => a.created - b.created).at(-1)?.id ?? null;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
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
