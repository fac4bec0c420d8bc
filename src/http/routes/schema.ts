import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { errorResponses } from '../schemas.js';
import { exampleFeatures } from '../../registry/load-version.js';
import { unavailable } from '../../lib/errors.js';

const FeatureDoc = z.object({
  name: z.string(),
  type: z.enum(['numeric', 'categorical', 'boolean']),
  nullable: z.boolean(),
  categories: z.array(z.string()).optional(),
  transform: z.string().optional(),
});

export const schemaRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/v1/schema',
    {
      onRequest: app.services.auth.require('predict'),
      schema: {
        tags: ['predict'],
        summary: "The active model's input features and an example request body",
        response: {
          200: z.object({
            modelVersion: z.string(),
            label: z.object({ name: z.string(), positive: z.string() }),
            threshold: z.number(),
            features: z.array(FeatureDoc),
            example: z.object({ features: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])) }),
          }),
          ...errorResponses,
        },
      },
    },
    async () => {
      const model = app.services.models.active;
      if (!model) throw unavailable('no model is loaded');
      const spec = model.spec;
      return {
        modelVersion: model.id,
        label: spec.label,
        threshold: spec.threshold,
        features: spec.features.map((f) => ({
          name: f.name,
          type: f.type,
          nullable: f.nullable,
          ...(f.type === 'categorical' ? { categories: f.vocabulary } : {}),
          ...(f.type === 'numeric' ? { transform: f.transform } : {}),
        })),
        example: { features: exampleFeatures(spec) },
      };
    },
  );
};
