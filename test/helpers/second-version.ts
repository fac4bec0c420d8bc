import { readFileSync, readdirSync, writeFileSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { buildManifest } from '../../src/registry/manifest.js';
import { DEFAULT_STORE } from './app.js';

/** The version bundled in model-store/ (version "A" in the lifecycle tests). */
export const BUNDLED_VERSION = 'shoppers-mlp-v1';

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
}

/**
 * Adds a second, deterministically different version to a store: a copy of the bundled version
 * whose output-layer bias is shifted by `biasShift` (so its probabilities differ for every row),
 * with its own card and a rebuilt manifest so checksums verify. Cheap: no training.
 */
export function addSecondVersion(storeDir: string, id: string, opts: { biasShift?: number; from?: string } = {}): string {
  const from = opts.from ?? BUNDLED_VERSION;
  const biasShift = opts.biasShift ?? 1.5;
  const srcDir = join(DEFAULT_STORE, 'versions', from);
  const files = new Map<string, Buffer>();
  for (const name of readdirSync(srcDir)) {
    if (name === 'manifest.json') continue;
    files.set(name, readFileSync(join(srcDir, name)));
  }

  // Locate output/bias in the (single) shard: weights are stored in manifest order, float32.
  const modelJson = JSON.parse(files.get('model.json')!.toString('utf8')) as {
    weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  };
  const group = modelJson.weightsManifest[0];
  if (modelJson.weightsManifest.length !== 1 || group.paths.length !== 1) throw new Error('expected one weight group in one shard');
  let offset = 0;
  let biasOffset = -1;
  for (const w of group.weights) {
    if (w.dtype !== 'float32') throw new Error(`unexpected dtype ${w.dtype}`);
    const count = w.shape.reduce((a, b) => a * b, 1);
    if (w.name === 'output/bias') biasOffset = offset;
    offset += count * 4;
  }
  if (biasOffset < 0) throw new Error('no output/bias weight');
  const shardName = group.paths[0];
  const shard = Buffer.from(files.get(shardName)!);
  if (shard.length !== offset) throw new Error(`shard has ${shard.length} bytes, manifest describes ${offset}`);
  shard.writeFloatLE(shard.readFloatLE(biasOffset) + biasShift, biasOffset);
  files.set(shardName, shard);

  const card = JSON.parse(files.get('card.json')!.toString('utf8')) as Record<string, unknown> & {
    created: string;
    headline?: Record<string, number>;
  };
  card.id = id;
  card.created = new Date(Date.parse(card.created) + 60_000).toISOString();
  card.notes = `test copy of ${from} with output bias shifted by ${biasShift}`;
  if (card.headline?.auc !== undefined) card.headline = { ...card.headline, auc: card.headline.auc - 0.01 };
  files.set('card.json', Buffer.from(JSON.stringify(card, null, 2) + '\n'));

  // Written beside the versions and renamed into place, like the store does, manifest included.
  const tmp = join(storeDir, 'versions', `.tmp-${id}`);
  mkdirSync(tmp);
  for (const [name, buf] of files) writeFileSync(join(tmp, name), buf);
  writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(buildManifest(id, files), null, 2) + '\n');
  renameSync(tmp, join(storeDir, 'versions', id));
  return id;
}

/** Flips bytes of a version's weight shard in place, so its manifest checksum no longer matches. */
export function corruptWeights(storeDir: string, id: string): void {
  const path = join(storeDir, 'versions', id, 'group1-shard1of1.bin');
  const buf = readFileSync(path);
  for (let i = 0; i < 16; i++) buf[i] ^= 0xff;
  writeFileSync(path, buf);
}
