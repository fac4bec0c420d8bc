import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRng } from '../src/lib/random.js';
import { stratifiedSplit } from '../src/training/split.js';

/**
 * `npm run evaluate` must drop exact duplicate rows before its 80/20 split, as training's cleaning
 * does: split first, and a row and its copy can land on both sides, so the "unseen" hold-out
 * scores rows the model was trained on.
 */
describe('npm run evaluate (scripts/evaluate-holdout.ts)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'evaluate-holdout-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('de-duplicates before splitting: training and hold-out are 80 % and 20 % of the distinct rows', () => {
    const rng = createRng(9);
    const unique: string[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 150; i++) {
      const x = rng();
      labels.push(x + 0.3 * rng() > 0.7 ? 1 : 0);
      unique.push(`${x.toFixed(6)},${['a', 'b', 'c'][i % 3]},${labels[i]}`);
    }
    // Every row written twice, the copies at the end (as a re-exported file would have them).
    const csv = join(dir, 'twice.csv');
    writeFileSync(csv, ['x,c,y', ...unique, ...unique].join('\n') + '\n');

    const r = spawnSync('npx', ['tsx', 'scripts/evaluate-holdout.ts', '--data', csv, '--label', 'y', '--positive', '1', '--categorical', '', '--seed', '42'], {
      encoding: 'utf8',
      env: { ...process.env, TF_BACKEND: 'wasm' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/300 rows read, 150 exact duplicates dropped before splitting/);
    const expected = stratifiedSplit(labels, { validation: 0, test: 0.2 }, 42);
    expect(r.stdout).toContain(`trained on ${expected.train.length} rows`);
    expect(r.stdout).toContain(`scored ${expected.test.length} unseen rows`);
    expect(r.stdout).toMatch(/AUC 0\.\d{4}/);
  }, 120_000);
});
