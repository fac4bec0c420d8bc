import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Config } from './config/env.js';
import { initBackend } from './inference/backend.js';
import { createServices, type Services } from './services.js';
import { frameworkErrors, installErrorHandling } from './http/error-handler.js';
import { clientErrors } from './http/client-errors.js';
import { requestId } from './http/request-id.js';
import { OneLineRequestLog } from './http/request-logging.js';
import { healthRoutes } from './http/routes/health.js';
import { predictRoutes } from './http/routes/predict.js';
import { schemaRoutes } from './http/routes/schema.js';
import { modelRoutes } from './http/routes/models.js';
import { segmentRoutes } from './http/routes/segments.js';
import { userRoutes } from './http/routes/users.js';
import { metricsRoutes } from './http/routes/metrics.js';
import { jobRoutes } from './http/routes/jobs.js';
import { uploadRoutes } from './http/routes/uploads.js';
import { errorForLog } from './observability/log-errors.js';

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export interface BuildOptions {
  /** Pino options or instance; tests pass `false` or a level. */
  logger?: FastifyServerOptions['logger'];
}

/**
 * Builds the whole service without listening: external plugins first, then the app's services,
 * then routes. Tests call this with real dependencies and use inject/supertest.
 */
export async function buildApp(config: Config, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const requestLog = new OneLineRequestLog();
  const app = Fastify({
    // Options a caller (tests) passes are layered over the service's own: errors are always logged
    // without the inputs they may carry (errorForLog), and the Authorization header never. (Fastify
    // types the serializer as Error-only; pino hands it whatever is logged as `err`, strings too.)
    logger: opts.logger === false ? false : { level: config.LOG_LEVEL, redact: ['req.headers.authorization'], serializers: { err: errorForLog as never }, ...(typeof opts.logger === 'object' ? opts.logger : {}) },
    logController: requestLog,
    bodyLimit: config.BODY_LIMIT_BYTES,
    // A caller's X-Request-Id is kept when it looks like one (see request-id.ts), else one is made.
    requestIdHeader: false,
    genReqId: requestId,
    clientErrorHandler: clientErrors,
    // A request that reaches a closing server on a connection still open is served (Fastify then
    // answers with Connection: close), not refused: the services stay up until requests end.
    return503OnClosing: false,
    // userIds may be 256 characters (more bytes once percent-encoded) and must stay erasable by URL.
    routerOptions: { maxParamLength: 4096 },
    frameworkErrors,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  // Bodies are JSON (and multipart on the upload routes): a text/plain body is a 415 like any other
  // type, not a string that fails validation.
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Purchase intent service',
        version: '1.0.0',
        description: 'Real-time purchase probability for e-commerce sessions, model lifecycle and audience segments.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const backend = await initBackend(config.TF_BACKEND);
  const services = await createServices(config, backend, app.log);
  app.decorate('services', services);
  requestLog.onCompleted = (method, route, status, seconds) => services.metrics.http.observe(method, route, status, seconds);
  app.addHook('onClose', async () => services.close());
  app.log.info(
    { backend, activeVersion: services.models.active?.id ?? null, inferencePath: services.models.active?.inferencePath ?? null, redis: config.REDIS_URL ? 'enabled' : 'disabled', auth: services.auth.open ? 'open' : 'keys' },
    'service ready',
  );
  if (services.auth.open) app.log.warn('API_KEYS is not set: predict and read (GET) routes are open; changes and admin routes are refused');

  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  await app.register(schemaRoutes);
  await app.register(predictRoutes);
  await app.register(modelRoutes);
  await app.register(segmentRoutes);
  await app.register(userRoutes);
  await app.register(jobRoutes);
  // Multipart upload routes (audience scoring, model import, datasets) in their own context.
  await app.register(uploadRoutes);
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
