import { it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
it('x', async () => {
  const app = await buildTestApp();
  const scorer = app.services.scorer;
  const rows = shopperFeatureRows(2000).map((r) => JSON.parse(JSON.stringify(r)));
  let k = 0;
  const round = async (n: number) => { const ps = []; for (let i = 0; i < n; i++) { const f = { ...rows[k++ % rows.length] }; f.ProductRelated_Duration = (f.ProductRelated_Duration as number) + k * 0.5; ps.push(scorer.predictOne({ features: f })); } await Promise.all(ps); };
  for (let i = 0; i < 2000; i++) await round(25);
  for (let rep = 0; rep < 3; rep++) {
    const t0 = process.cpuUsage(); const w = performance.now();
    for (let i = 0; i < 8000; i++) await round(25);
    const c = process.cpuUsage(t0);
    console.log('µs/pred cpu', ((c.user + c.system) / 200000).toFixed(2), 'wall', ((performance.now() - w) * 1000 / 200000).toFixed(2));
  }
  await app.close();
}, 120000);
