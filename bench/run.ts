/**
 * npm run bench [-- --only predict,batch] [-- --list]
 *
 * Load-tests the service against a bare Fastify baseline on the same machine, in one run, and
 * reports ratios (the machine is shared and noisy: absolute numbers move, ratios much less).
 * Always exits 0 after printing the summary: it is a measurement, not a test.
 *
 * Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 2), BENCH_CONNECTIONS (50),
 * BENCH_LOG_LEVEL (warn), BENCH_TF_BACKEND (auto), BENCH_MODEL_STORE (./model-store, served
 * from a temp copy), BENCH_SERVICE_NODE_ARGS (extra node flags for service children, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof"; summarize with bench/prof-top.ts), BENCH_BARE_NODE_ARGS
 * (same for the bare baseline), BENCH_SLICE (s, 2: length of the interleaved bare/service
 * slices), BENCH_LATENCY_RATE (500), BENCH_BATCH_ROWS (1000), BENCH_BATCH_CONNECTIONS (8),
 * BENCH_FAULT_DURATION (s, 10), BENCH_LIFECYCLE_RATE (req/s during retrain, 1000),
 * BENCH_SWAP_SECONDS (30), BENCH_EXPLAIN_RATE (req/s, 300), BENCH_SERVICE_CODE (dist: the
 * service runs the compiled build, made first with `npm run build`, as `npm start` runs it; src:
 * from the TypeScript sources through tsx); the segments phase reads
 * SEGMENTS_SCALE_MEMBERS, SEGMENTS_SCALE_PAGES and SEGMENTS_SCALE_FEATURE_USERS (see segments-scale.ts).
 */
import { spawnSync } from 'node:child_process';
import { BenchContext, settingsFromEnv } from './lib/context.js';
import { killAllChildrenSync } from './lib/children.js';
import { table } from './lib/load.js';
import { phases } from './phases/index.js';

function parseArgs(argv: string[]): { only?: string[]; list: boolean } {
  let only: string[] | undefined;
  let list = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--list') list = true;
    else if (a === '--only') only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a.startsWith('--only=')) only = a.slice('--only='.length).split(',').filter(Boolean);
    else throw new Error(`unknown argument ${a} (use --only a,b or --list)`);
  }
  return { only, list };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const p of phases) console.log(`${p.name.padEnd(10)} ${p.description}`);
    return;
  }
  const unknown = (args.only ?? []).filter((n) => !phases.some((p) => p.name === n));
  if (unknown.length) throw new Error(`unknown phase ${unknown.join(', ')}; phases: ${phases.map((p) => p.name).join(', ')}`);
  const selected = args.only ? phases.filter((p) => args.only!.includes(p.name)) : phases;

  const ctx = new BenchContext(settingsFromEnv());
  const started = performance.now();
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\n${sig}: stopping children\n`);
    void ctx.cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killAllChildrenSync);

  const s = ctx.settings;
  if (s.serviceCode === 'dist') {
    // The service as production runs it: the compiled build of the current sources.
    const build = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
    if (build.status !== 0) throw new Error('npm run build failed: the bench needs the compiled service (or BENCH_SERVICE_CODE=src)');
  }
  ctx.log(`bench: phases ${selected.map((p) => p.name).join(', ')}; node ${process.version}; ${s.connections} connections, ${s.warmupSec} s warm-up, ${s.durationSec} s measured; LOG_LEVEL ${s.logLevel}, TF_BACKEND ${s.tfBackend}; service code ${s.serviceCode === 'dist' ? 'dist/ (compiled)' : 'src/ (tsx)'}`);
  const failedPhases: string[] = [];
  try {
    for (const phase of selected) {
      ctx.phase = phase.name;
      ctx.log(`\n=== ${phase.name}: ${phase.description} ===`);
      const t = performance.now();
      try {
        await phase.run(ctx);
      } catch (err) {
        failedPhases.push(phase.name);
        ctx.log(`phase ${phase.name} failed: ${(err as Error).stack ?? String(err)}`);
        ctx.check('phase completed', 'no error', (err as Error).message.split('\n')[0], false);
      }
      ctx.log(`(${phase.name}: ${((performance.now() - t) / 1000).toFixed(1)} s)`);
    }
  } finally {
    await ctx.cleanup();
  }

  ctx.log(`\n=== summary (${((performance.now() - started) / 1000).toFixed(1)} s) ===`);
  ctx.log(
    table(
      ['phase', 'check', 'target', 'measured', 'result'],
      ctx.checks.map((c) => [c.phase, c.name, c.target, c.measured, c.pass ? 'PASS' : 'FAIL']),
      5,
    ),
  );
  if (failedPhases.length) ctx.log(`phases with errors: ${failedPhases.join(', ')}`);
}

main()
  .catch((err) => {
    console.error(err instanceof Error ? err.message : err);
  })
  .finally(() => {
    killAllChildrenSync();
    process.exit(0);
  });
