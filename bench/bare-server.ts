/**
 * Bench child: the baseline. A bare Fastify 5 server whose POST routes parse the same JSON bodies
 * (Fastify's default JSON parser) and answer a constant JSON, with no validation, logging,
 * model or cache. The service/bare ratio says how much of the HTTP stack's budget the service's
 * own work costs.
 */
import Fastify from 'fastify';

const app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
// Same shape and about the same size as the service's answer.
const prediction = { probability: 0.5, label: false, threshold: 0.5, modelVersion: 'bare', cached: false, warnings: [] as string[], persona: { id: 1, label: 'Engaged browsers' } };

app.post('/v1/predict', async (request) => {
  if (request.body === null || typeof request.body !== 'object') throw new Error('no body');
  return prediction;
});
app.post('/v1/predict/batch', async (request) => {
  const instances = (request.body as { instances?: unknown[] }).instances ?? [];
  return { modelVersion: 'bare', predictions: instances.map(() => prediction) };
});
app.get('/readyz', async () => ({ status: 'ready' }));
app.get('/__bench/stats', async () => {
  const u = process.cpuUsage();
  return { cpuUs: u.user + u.system, requests };
});

let requests = 0;
app.server.on('request', (req: { method?: string }) => {
  if (req.method === 'POST') requests++;
});
await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : 0;
process.stdout.write(`BENCH_READY ${JSON.stringify({ port, pid: process.pid })}\n`);

let closing = false;
async function shutdown(): Promise<void> {
  if (closing) return;
  closing = true;
  setTimeout(() => process.exit(1), 5000).unref();
  await app.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
process.stdin.on('end', () => void shutdown());
process.stdin.on('error', () => void shutdown());
process.stdin.resume();
