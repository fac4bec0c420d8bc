import { createWriteStream, rmSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { FastifyRequest } from 'fastify';
import { AppError, ValidationError } from '../lib/errors.js';

/**
 * Streams the one file part of a multipart upload to `dest` (created, never overwritten), then
 * reads the body to its end: a part after the file is refused (400, through the error handler's
 * multipart limits) just like one before it, instead of being silently ignored. No other field is
 * read, so nothing piles up in memory. Whatever is refused leaves no file behind.
 */
export async function receiveOneFile(request: FastifyRequest, dest: string, limit: number): Promise<{ filename: string }> {
  const parts = request.parts({ limits: { fileSize: limit, files: 1, fields: 0, parts: 1 } });
  const first = await parts.next();
  if (first.done || first.value.type !== 'file') throw new ValidationError([{ path: 'file', message: 'required: one file part with the CSV' }]);
  const part = first.value;
  const tooLarge = () => new AppError(413, 'payload_too_large', `file "${part.filename}" exceeds UPLOAD_LIMIT_BYTES (${limit} bytes)`);
  try {
    await pipeline(part.file, createWriteStream(dest, { flags: 'wx' }));
    if (part.file.truncated) throw tooLarge();
    // Resolves at the body's end; rejects (FST_PARTS_LIMIT) when another part follows the file.
    await parts.next();
  } catch (err) {
    rmSync(dest, { force: true });
    if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge();
    throw err;
  }
  return { filename: part.filename };
}
