import { existsSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve, sep, win32 } from 'node:path';
import { ValidationError } from '../lib/errors.js';

/** Upload ids are UUIDs we generate; anything else is refused before touching the disk. */
export const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const uploadsDir = (dataDir: string) => join(resolve(dataDir), 'uploads');
export const uploadPath = (dataDir: string, uploadId: string) => join(uploadsDir(dataDir), `${uploadId}.csv`);

const inside = (root: string, p: string) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);

/**
 * Resolves a client-supplied dataset path against DATA_DIR, or throws a 400 naming `field`.
 * Refused: absolute paths (POSIX or Windows style), any `..` segment, NUL bytes, and anything whose
 * real path (symlinks followed) is outside DATA_DIR's real path. Returns the real path, so a
 * symlink swapped after this check cannot redirect the read.
 */
export function resolveDatasetPath(dataDir: string, relative: string, field = 'dataset.path'): string {
  const fail = (message: string): never => {
    throw new ValidationError([{ path: field, message }]);
  };
  if (relative.trim() === '') fail('must not be empty');
  if (relative.includes('\0')) fail('must not contain NUL bytes');
  if (isAbsolute(relative) || win32.isAbsolute(relative)) fail('must be a path relative to DATA_DIR, not an absolute path');
  if (relative.split(/[\\/]+/).some((seg) => seg === '..')) fail('must not contain ".." segments');

  const root = resolve(dataDir);
  const candidate = resolve(root, relative);
  if (!inside(root, candidate)) fail('must resolve inside DATA_DIR');
  if (!existsSync(candidate)) fail('no such file in DATA_DIR');

  let realRoot: string;
  let real: string;
  try {
    realRoot = realpathSync(root);
    real = realpathSync(candidate);
  } catch {
    return fail('cannot be resolved (broken symlink?)');
  }
  if (!inside(realRoot, real)) fail('resolves (through a symlink) outside DATA_DIR');
  if (!statSync(real).isFile()) fail('is not a regular file');
  return real;
}

/** The stored CSV of an upload, or a 400 naming `dataset.uploadId`. */
export function resolveUpload(dataDir: string, uploadId: string, field = 'dataset.uploadId'): string {
  if (!UPLOAD_ID.test(uploadId)) throw new ValidationError([{ path: field, message: 'not an upload id (as returned by POST /v1/datasets)' }]);
  const p = uploadPath(dataDir, uploadId);
  if (!existsSync(p)) throw new ValidationError([{ path: field, message: `unknown upload ${uploadId}` }]);
  return realpathSync(p);
}
