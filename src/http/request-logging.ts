import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/**
 * One log line per request (request id, route, status, latency) instead of Fastify's two.
 * Bodies are never logged, so feature values and raw userIds stay out of the logs.
 */
export class OneLineRequestLog extends LogController {
  /** Told about every answered request (the HTTP metrics), whatever the log level. */
  onCompleted?: (method: string, route: string | undefined, status: number, seconds: number) => void;

  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    // Read once: routeOptions is a getter that builds an object, and both uses want the same latency.
    const route = request.routeOptions.url;
    const ms = reply.elapsedTime;
    this.onCompleted?.(request.method, route, reply.statusCode, ms / 1000);
    if (!error && !(request.log as unknown as { isLevelEnabled(l: string): boolean }).isLevelEnabled?.('info')) return;
    const line = { method: request.method, route: route ?? 'unmatched', status: reply.statusCode, ms: Math.round(ms * 100) / 100 };
    if (error) request.log.error({ ...line, err: error }, 'request failed');
    else request.log.info(line, 'request');
  }

  /** A streamed answer (an export) that broke after its headers were sent: the request's one line, with why. */
  override streamError(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    const line = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: reply.statusCode, ms: Math.round(reply.elapsedTime * 100) / 100 };
    if ((error as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE') request.log.info({ ...line, aborted: true }, 'request: client went away during the answer');
    else request.log.warn({ ...line, err: error }, 'request: answer stream failed after its headers were sent');
  }
}
