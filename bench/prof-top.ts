/**
 * Summarizes V8 .cpuprofile files (node --cpu-prof): top functions by self time, and by inclusive
 * time, with file:line. Usage:
 *   BENCH_SERVICE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- --only predict
 *   npx tsx bench/prof-top.ts /tmp/prof/<file>.cpuprofile [--top 30] [--filter src/] [--last 12]
 * --last N keeps only the final N seconds of samples (the service's own load run comes last in
 * the predict phase, after the bare baseline during which the service is idle).
 * --buckets attributes every sample to the first BUCKETS entry (in list order) that matches any
 * frame of its stack, i.e. "where did the request path spend its time", startup separated.
 * --per N adds a µs-per-request column (N = requests the process served, e.g. from /__bench/stats).
 * --packages groups self time by where the code lives (src, each node_modules package, each node:
 * module, native, GC): run it on the service and on the bare baseline (BENCH_BARE_NODE_ARGS) and
 * the difference per request is what the service adds.
 */
import { readFileSync } from 'node:fs';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const args = process.argv.slice(2);
const VALUED = new Set(['--top', '--filter', '--last', '--per']);
const files = args.filter((a, i) => !a.startsWith('--') && !VALUED.has(args[i - 1]));
process.stdout.on('error', () => process.exit(0)); // e.g. piped into head
const top = Number(args[args.indexOf('--top') + 1] ?? 30) || 30;
const filter = args.includes('--filter') ? args[args.indexOf('--filter') + 1] : undefined;
const lastSec = args.includes('--last') ? Number(args[args.indexOf('--last') + 1]) : Infinity;
const buckets = args.includes('--buckets');
const packages = args.includes('--packages');
/** [bucket, substring of "function  file:line"], in priority order; a sample goes to the first that matches any of its frames. */
const BUCKETS: [string, string][] = [
  ['startup: module loading/compiling', 'node:internal/modules/'],
  ['startup: module loading/compiling', 'register-'],
  ['GC', '(garbage collector)'],
  ['model: LoadedModel.predictSync (tfjs wasm)', 'predictSync  src/inference/loaded-model.ts'],
  ['cacheKey (sha1 of vector)', 'cacheKey  src/inference/scorer.ts'],
  ['coerceFeatures', 'coerceFeatures  src/preprocessing/coerce.ts'],
  ['Encoder.encodeInto', 'encodeInto  src/preprocessing/transform.ts'],
  ['ScoreCache (lru-cache get/set)', 'src/cache/score-cache.ts'],
  ['zod response serializer (safeEncode+JSON.stringify)', 'fastify-type-provider-zod/dist/esm/core.js:116'],
  ['zod request validator (safeParse)', 'fastify-type-provider-zod/dist/esm/core.js:104'],
  ['JSON.parse of body (secure-json-parse)', '_parse  node_modules/secure-json-parse'],
  ['socket writes (writev syscall)', 'writev  '],
  ['service code (rest of src/: scorer, use(), batcher, auth)', 'src/'],
  ['fastify reply/send + node http outgoing', 'fastify/lib/reply.js'],
  ['fastify routing/hooks/body reading', 'node_modules/fastify/'],
  ['node http parser/server', 'node:_http'],
];
const per = args.includes('--per') ? Number(args[args.indexOf('--per') + 1]) : 0;

for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  // The bench runs the compiled build: name its files as their sources, so buckets and packages
  // match either way (line numbers stay those of the dist/ file).
  const dist = `file://${process.cwd()}/dist/`;
  for (const n of p.nodes) {
    const url = n.callFrame.url;
    if (url.startsWith(dist) && url.endsWith('.js')) n.callFrame.url = `file://${process.cwd()}/src/${url.slice(dist.length, -3)}.ts`;
  }
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) times.push((t += d));
  const from = p.endTime - lastSec * 1e6;
  p.samples.forEach((id, i) => {
    if (times[i] >= from) selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  });
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

  const key = (f: CallFrame) => {
    const url = f.url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '');
    return `${f.functionName || '(anonymous)'}  ${url}${url ? `:${f.lineNumber + 1}` : ''}`;
  };
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const k = key(byId.get(id)!.callFrame);
    self.set(k, (self.get(k) ?? 0) + us);
    // Inclusive: credit each distinct function on the stack once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const kk = key(byId.get(cur)!.callFrame);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + us);
    }
  }
  const show = (title: string, m: Map<string, number>) => {
    console.log(`\n${title}`);
    const rows = [...m.entries()].filter(([k]) => !filter || k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [k, us] of rows) {
      const perReq = per ? `${(us / per).toFixed(1).padStart(7)} µs/req  ` : '';
      console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${perReq}${k}`);
    }
  };
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled`);
  if (packages) {
    const sums = new Map<string, number>();
    for (const [id, us] of selfUs) {
      const k = packageOf(byId.get(id)!.callFrame);
      sums.set(k, (sums.get(k) ?? 0) + us);
    }
    show('self time by package', sums);
    continue;
  }
  if (buckets) {
    const sums = new Map<string, number>();
    for (const [id, us] of selfUs) {
      let bucket = 'other';
      const leaf = key(byId.get(id)!.callFrame);
      if (leaf.startsWith('(idle)')) bucket = '(idle)';
      else if (leaf.startsWith('(program)')) bucket = '(program: native/unattributed)';
      else {
        const stack: string[] = [];
        for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(key(byId.get(cur)!.callFrame));
        bucket = BUCKETS.find(([, needle]) => stack.some((k) => k.includes(needle)))?.[0] ?? 'other';
      }
      sums.set(bucket, (sums.get(bucket) ?? 0) + us);
    }
    show('buckets (first matching bucket anywhere on the stack)', sums);
    continue;
  }
  show('self time', self);
  show('inclusive time', incl);
}

/** "src", "npm:<package>", "node:<module>", "wasm", "(garbage collector)", "native:<fn>", … */
function packageOf(f: CallFrame): string {
  const url = f.url;
  if (!url) return f.functionName.startsWith('(') ? f.functionName : `native:${f.functionName || '(anonymous)'}`;
  if (url.startsWith('wasm')) return 'wasm';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const nm = url.split('node_modules/').pop()!;
  if (nm !== url) return `npm:${nm.split('/').slice(0, nm.startsWith('@') ? 2 : 1).join('/')}`;
  return url.includes('/src/') ? 'src' : 'other';
}
