import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelStore } from '../src/registry/model-store.js';

const lines = readFileSync('data/online_shoppers_intention.csv', 'utf8').trim().split('\n');
// A small but realistic slice (header + 2,000 sessions) keeps each run to a few seconds.
const dir = mkdtempSync(join(tmpdir(), 'train-cli-'));
const csv = join(dir, 'shoppers-2000.csv');
writeFileSync(csv, lines.slice(0, 2001).join('\n') + '\n');

function train(out: string, extra: string[] = []) {
  return spawnSync(
    'npx',
    ['tsx', 'src/training/cli.ts', '--data', csv, '--label', 'Revenue', '--positive', 'TRUE', '--categorical', 'OperatingSystems,Browser,Region,TrafficType', '--out', out, '--epochs', '4', '--seed', '7', ...extra],
    { encoding: 'utf8', env: { ...process.env, TF_BACKEND: 'wasm' } },
  );
}

describe('training CLI', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a complete version, reports progress on stderr and metrics on stdout, and is reproducible from the seed', () => {
    const a = train(join(dir, 'store-a'), ['--id', 'run-a']);
    const b = train(join(dir, 'store-b'), ['--id', 'run-b']);
    expect(a.status, a.stderr).toBe(0);
    expect(b.status, b.stderr).toBe(0);
    expect(a.stderr).toMatch(/epoch +1 +loss [\d.]+ +val_loss [\d.]+ +val_auc [\d.]+/);
    expect(a.stderr).toMatch(/cleaning: read 2000, dropped \d+ duplicate/);
    expect(a.stdout).toMatch(/AUC\s+0\.\d{4}/);

    const storeA = new ModelStore(join(dir, 'store-a'));
    expect(readdirSync(storeA.dir('run-a')).sort()).toEqual(
      ['card.json', 'feature-spec.json', 'group1-shard1of1.bin', 'manifest.json', 'metrics.json', 'model.json', 'personas.json'].sort(),
    );
    storeA.verify('run-a');
    const model = JSON.parse(readFileSync(join(storeA.dir('run-a'), 'model.json'), 'utf8'));
    expect(model.format).toBe('layers-model');
    expect(model.weightsManifest[0].paths).toEqual(['group1-shard1of1.bin']);

    const metrics = (store: string, id: string) => JSON.parse(readFileSync(join(dir, store, 'versions', id, 'metrics.json'), 'utf8')).test;
    expect(metrics('store-b', 'run-b')).toEqual(metrics('store-a', 'run-a'));
    expect(readFileSync(join(dir, 'store-b/versions/run-b/group1-shard1of1.bin'))).toEqual(readFileSync(join(dir, 'store-a/versions/run-a/group1-shard1of1.bin')));
  });

  it('refuses bad arguments with a usage message', () => {
    const r = spawnSync('npx', ['tsx', 'src/training/cli.ts', '--data', csv], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/missing --label, --positive/);
    expect(r.stderr).toMatch(/usage: npm run train/);
    const bad = train(join(dir, 'store-c'), ['--label', 'NoSuchColumn']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/label column "NoSuchColumn" not in CSV/);
  });
});
