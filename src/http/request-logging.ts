import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/**
 * One log line per request (request id, route, status, latency) instead of Fastify's two.
 * Bodies are never logged, so feature values and raw userIds stay out of the logs.
 */
export class OneLineRequestLog extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (!error && !(request.log as unknown as { isLevelEnabled(l: string): boolean }).isLevelEnabled?.('info')) return;
    const line = {
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
    };
    if (error) request.log.error({ ...line, err: error }, 'request failed');
    else request.log.info(line, 'request');
  }
}
