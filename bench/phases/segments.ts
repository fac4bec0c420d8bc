import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import type { Phase } from '../lib/context.js';
import { verdicts, type SegmentsScaleResult } from '../segments-scale.js';

/**
 * Segments at scale (bench/segments-scale.ts) in its own node process, so its RSS figures are not
 * mixed with this runner's: 1M members in Redis, member pages at random cursors, a streamed CSV
 * export of all of them, and the profile of a 100k-member segment. SEGMENTS_SCALE_MEMBERS,
 * SEGMENTS_SCALE_FEATURE_USERS and SEGMENTS_SCALE_PAGES pass through.
 */
export const segmentsPhase: Phase = {
  name: 'segments',
  description: 'segments at scale: 1M-member pages, streamed CSV export RSS, 100k profile',
  async run(ctx) {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve('bench/segments-scale.ts')], { cwd: process.cwd(), env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    ctx.defer(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let result: SegmentsScaleResult | undefined;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('SEGMENTS_SCALE_RESULT ')) result = JSON.parse(line.slice('SEGMENTS_SCALE_RESULT '.length)) as SegmentsScaleResult;
      else if (line.trim()) ctx.log(`  ${line}`);
    });
    createInterface({ input: child.stderr! }).on('line', (line) => process.stderr.write(`  [segments] ${line}\n`));
    const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    if (!result) throw new Error(`segments-scale exited with ${code} and no result`);
    for (const v of verdicts(result)) ctx.check(v.name, v.target, v.measured, v.pass);
  },
};
