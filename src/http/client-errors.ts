import type { FastifyBaseLogger } from 'fastify';

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (a malformed header line, a bad
 * Content-Length, headers over the size limit, a timeout) answered with the service's error body
 * instead of Fastify's default one. Mirrors Fastify's default handler otherwise: nothing is written
 * to a reset or unwritable socket, and the connection is closed.
 */
export function clientErrors(this: { log: FastifyBaseLogger } | undefined, err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, error, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout', 'request_timeout', 'the request was not received in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'request_header_fields_too_large', 'request headers are too large']
        : [400, 'Bad Request', 'bad_request', 'malformed HTTP request'];
  // Fastify binds the handler to the instance: such a request gets its log line too (no id or route: it never parsed).
  this?.log.info({ status, err: err.code ?? err.message }, 'request refused by the HTTP parser');
  const body = JSON.stringify({ error, message, details: [] });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(err);
}
