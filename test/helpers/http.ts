import { expect } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';

export interface ErrorBody {
  error: string;
  message: string;
  details: { path: string; message: string }[];
}

/** Asserts the status and the service's single error body shape; returns the parsed body. */
export function expectError(res: LightMyRequestResponse, status: number, code?: string): ErrorBody {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  const body = res.json() as ErrorBody;
  expect(Object.keys(body).sort()).toEqual(['details', 'error', 'message']);
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
  expect(body.message.length).toBeGreaterThan(0);
  expect(Array.isArray(body.details)).toBe(true);
  for (const d of body.details) {
    expect(Object.keys(d).sort()).toEqual(['message', 'path']);
    expect(typeof d.path).toBe('string');
    expect(typeof d.message).toBe('string');
  }
  if (code) expect(body.error).toBe(code);
  return body;
}

/** The distinct detail paths of an error body, sorted. */
export const pathsOf = (body: ErrorBody) => [...new Set(body.details.map((d) => d.path))].sort();

/** Polls `check` until it returns a truthy value or the deadline passes (a bounded wait, not a timing assertion). */
export async function until<T>(check: () => Promise<T> | T, what: string, timeoutMs = 15_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface FormPart {
  name: string;
  value: Buffer | string;
  filename?: string;
}

/** A multipart/form-data body as a browser or curl would send it, for `app.inject`. */
export async function multipart(parts: FormPart[]) {
  const form = new FormData();
  for (const p of parts) {
    if (p.filename !== undefined) form.append(p.name, new Blob([new Uint8Array(Buffer.from(p.value))]), p.filename);
    else form.append(p.name, String(p.value));
  }
  const res = new Response(form);
  return { payload: Buffer.from(await res.arrayBuffer()), headers: { 'content-type': res.headers.get('content-type')! } };
}

/** `rows` scored through /v1/predict/batch (which bypasses the score cache): version and probabilities in order. */
export async function batchScores(
  app: { inject: (opts: { method: 'POST'; url: string; headers: Record<string, string>; payload: object }) => Promise<LightMyRequestResponse> },
  rows: Record<string, unknown>[],
  headers: Record<string, string>,
): Promise<{ modelVersion: string; probabilities: number[] }> {
  const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers, payload: { instances: rows.map((features) => ({ features })) } });
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json() as { modelVersion: string; predictions: { probability: number }[] };
  return { modelVersion: body.modelVersion, probabilities: body.predictions.map((p) => p.probability) };
}
