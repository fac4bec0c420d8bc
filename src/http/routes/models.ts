import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { bodyErrorResponses, ErrorBody, errorResponses } from '../schemas.js';
import { AppError, notFound } from '../../lib/errors.js';
import type { StoreState } from '../../registry/model-store.js';

const VersionParam = z.object({ version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'invalid version id') });
const Actor = z.object({ reason: z.string().max(500).optional() }).strict();
const Headline = z.object({ auc: z.number().optional(), f1: z.number().optional(), brier: z.number().optional(), logLoss: z.number().optional() });
const ModelSummary = z.object({
  id: z.string(),
  created: z.string(),
  source: z.enum(['trained', 'imported']),
  dataFingerprint: z.string().nullable(),
  headline: Headline,
  state: z.enum(['active', 'canary', 'inactive']),
});
const StateBody = z.object({
  active: z.string().nullable(),
  canary: z.object({ version: z.string(), percent: z.number(), mode: z.enum(['split', 'shadow']) }).nullable(),
});
const HistoryEntry = z.object({
  at: z.string(),
  action: z.string(),
  version: z.string().nullable(),
  previous: z.string().nullable(),
  by: z.string(),
  reason: z.string().optional(),
});
const withConflict = { ...errorResponses, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody };

/** Model registry and lifecycle: reads need any valid key; changes need the admin scope. */
export const modelRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, lifecycle, auth } = app.services;
  const read = auth.require('read');
  const admin = auth.require('admin');
  const stateOf = (s: StoreState) => ({ active: s.active, canary: s.canary });

  function summary(id: string, state: StoreState) {
    const card = store.card(id);
    return {
      id,
      created: card.created,
      source: card.source,
      dataFingerprint: card.dataFingerprint ?? null,
      headline: card.headline ?? {},
      state: state.active === id ? ('active' as const) : state.canary?.version === id ? ('canary' as const) : ('inactive' as const),
    };
  }

  function requireVersion(id: string) {
    if (!store.has(id)) throw notFound(`version ${id}`);
  }

  app.get(
    '/v1/models',
    {
      onRequest: read,
      schema: {
        tags: ['models'],
        summary: 'All versions in the registry',
        response: {
          200: z.object({
            models: z.array(ModelSummary),
            unreadable: z.array(z.object({ id: z.string(), reason: z.string() })).meta({ description: 'Registered versions whose files cannot be read (hand-copied, edited or damaged): listed apart, never served unasked' }),
          }),
          ...errorResponses,
        },
      },
    },
    async () => {
      const state = await lifecycle.state();
      const models: ReturnType<typeof summary>[] = [];
      const unreadable: { id: string; reason: string }[] = [];
      for (const id of store.listIds()) {
        try {
          models.push(summary(id, state));
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          unreadable.push({ id, reason: err.message });
        }
      }
      return { models: models.sort((a, b) => b.created.localeCompare(a.created)), unreadable };
    },
  );

  app.get('/v1/models/history', { onRequest: read, schema: { tags: ['models'], summary: 'Activations, rollbacks and canary changes: who, when, why', response: { 200: z.object({ history: z.array(HistoryEntry) }), ...errorResponses } } }, async () => ({
    history: [...(await lifecycle.state()).history].reverse(),
  }));

  app.get(
    '/v1/models/compare',
    {
      onRequest: read,
      schema: {
        tags: ['models'],
        summary: 'Headline metrics of two versions side by side',
        querystring: z.object({ a: VersionParam.shape.version, b: VersionParam.shape.version }),
        response: { 200: z.object({ a: ModelSummary, b: ModelSummary, difference: z.record(z.string(), z.number()) }), ...withConflict },
      },
    },
    async (request) => {
      const { a, b } = request.query;
      requireVersion(a);
      requireVersion(b);
      const state = await lifecycle.state();
      const sa = summary(a, state);
      const sb = summary(b, state);
      const difference: Record<string, number> = {};
      for (const k of ['auc', 'f1', 'brier', 'logLoss'] as const) {
        if (sa.headline[k] !== undefined && sb.headline[k] !== undefined) difference[k] = sb.headline[k]! - sa.headline[k]!;
      }
      return { a: sa, b: sb, difference };
    },
  );

  app.get(
    '/v1/models/:version',
    { onRequest: read, schema: { tags: ['models'], summary: 'Full model card', params: VersionParam, response: { 200: z.object({ card: z.record(z.string(), z.unknown()), state: ModelSummary.shape.state, spec: z.object({ label: z.object({ name: z.string(), positive: z.string() }), threshold: z.number(), features: z.array(z.object({ name: z.string(), type: z.string(), nullable: z.boolean() })) }), metrics: z.record(z.string(), z.unknown()).nullable() }), ...withConflict } } },
    async (request) => {
      const id = request.params.version;
      requireVersion(id);
      const spec = store.spec(id);
      const metrics = store.metrics<Record<string, unknown>>(id);
      const state = await lifecycle.state();
      return {
        card: store.card(id) as unknown as Record<string, unknown>,
        state: summary(id, state).state,
        spec: { label: spec.label, threshold: spec.threshold, features: spec.features.map((f) => ({ name: f.name, type: f.type, nullable: f.nullable })) },
        metrics: metrics ? { test: headlineOf(metrics.test), validation: headlineOf(metrics.validation), cleaning: metrics.cleaning ?? null, split: metrics.split ?? null } : null,
      };
    },
  );

  app.get(
    '/v1/models/:version/report',
    { onRequest: read, schema: { tags: ['models'], summary: 'Test-split metrics, confusion matrix at the threshold, calibration bins and ROC points', params: VersionParam, response: { 200: z.record(z.string(), z.unknown()), ...withConflict } } },
    async (request) => {
      const id = request.params.version;
      requireVersion(id);
      const metrics = store.metrics<Record<string, Record<string, unknown>>>(id);
      if (!metrics?.test) throw notFound(`evaluation report for ${id} (imported versions have none)`);
      const t = metrics.test;
      return {
        version: id,
        threshold: t.threshold,
        metrics: headlineOf(t),
        confusionMatrix: t.confusion,
        calibration: t.calibration,
        roc: t.roc,
      };
    },
  );

  app.delete(
    '/v1/models/:version',
    { onRequest: admin, schema: { tags: ['models'], summary: 'Delete an inactive version (409 for the active or canary one)', params: VersionParam, response: { 200: z.object({ deleted: z.string() }), ...withConflict } } },
    async (request) => {
      const id = request.params.version;
      requireVersion(id);
      await lifecycle.deleteVersion(id);
      return { deleted: id };
    },
  );

  app.post(
    '/v1/models/:version/activate',
    { onRequest: admin, schema: { tags: ['models'], summary: 'Verify, load, warm up, then atomically swap in this version on every replica', params: VersionParam, body: Actor.nullish(), response: { 200: StateBody, ...withConflict, ...bodyErrorResponses } } },
    async (request) => stateOf(await lifecycle.activate(request.params.version, { by: request.actor ?? 'unknown', reason: request.body?.reason })),
  );

  app.post(
    '/v1/models/rollback',
    { onRequest: admin, schema: { tags: ['models'], summary: 'Re-activate the previously active version', body: Actor.nullish(), response: { 200: StateBody, ...withConflict, ...bodyErrorResponses } } },
    async (request) => stateOf(await lifecycle.rollback({ by: request.actor ?? 'unknown', reason: request.body?.reason })),
  );

  app.post(
    '/v1/models/:version/canary',
    {
      onRequest: admin,
      schema: {
        tags: ['models'],
        summary: 'Route a share of traffic (sticky per userId) to this version, or score it in shadow',
        params: VersionParam,
        body: z.union([
          z.object({ percent: z.number().gt(0).max(100), reason: z.string().max(500).optional() }).strict(),
          z.object({ mode: z.literal('shadow'), reason: z.string().max(500).optional() }).strict(),
        ]),
        response: { 200: StateBody, ...withConflict, ...bodyErrorResponses },
      },
    },
    async (request) => {
      const body = request.body;
      const opts = 'mode' in body ? { percent: 0, mode: 'shadow' as const } : { percent: body.percent, mode: 'split' as const };
      return stateOf(await lifecycle.startCanary(request.params.version, opts, { by: request.actor ?? 'unknown', reason: body.reason }));
    },
  );

  app.post('/v1/models/canary/promote', { onRequest: admin, schema: { tags: ['models'], summary: 'Make the canary the active version', body: Actor.nullish(), response: { 200: StateBody, ...withConflict, ...bodyErrorResponses } } }, async (request) =>
    stateOf(await lifecycle.promoteCanary({ by: request.actor ?? 'unknown', reason: request.body?.reason })),
  );

  app.post('/v1/models/canary/abort', { onRequest: admin, schema: { tags: ['models'], summary: 'Stop the canary; all traffic to the active version', body: Actor.nullish(), response: { 200: StateBody, ...withConflict, ...bodyErrorResponses } } }, async (request) =>
    stateOf(await lifecycle.abortCanary({ by: request.actor ?? 'unknown', reason: request.body?.reason })),
  );

  app.get(
    '/v1/models/:version/shadow',
    { onRequest: read, schema: { tags: ['models'], summary: 'Agreement of a shadow version with the active one', params: VersionParam, response: { 200: z.object({ version: z.string(), n: z.number(), meanAbsDiff: z.number(), labelAgreement: z.number(), incompatible: z.number() }), ...withConflict } } },
    async (request) => {
      requireVersion(request.params.version);
      return lifecycle.shadowStats(request.params.version);
    },
  );
};

function headlineOf(m: unknown) {
  if (!m || typeof m !== 'object') return null;
  const r = m as Record<string, unknown>;
  return { n: r.n, positives: r.positives, auc: r.auc, accuracy: r.accuracy, precision: r.precision, recall: r.recall, f1: r.f1, brier: r.brier, logLoss: r.logLoss, threshold: r.threshold };
}
