import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Manifest {
  id: string;
  files: Record<string, string>; // file name → sha256
}

export const sha256 = (buf: Buffer | Uint8Array | string) => createHash('sha256').update(buf).digest('hex');

export function buildManifest(id: string, files: Map<string, Buffer>): Manifest {
  return { id, files: Object.fromEntries([...files].map(([name, buf]) => [name, sha256(buf)]).sort()) };
}

/** Throws naming every file whose checksum does not match (or that is missing). */
export function verifyManifest(dir: string, manifest: Manifest): void {
  const bad: string[] = [];
  for (const [name, expected] of Object.entries(manifest.files)) {
    try {
      if (sha256(readFileSync(join(dir, name))) !== expected) bad.push(`${name} (checksum mismatch)`);
    } catch {
      bad.push(`${name} (missing)`);
    }
  }
  if (bad.length) throw new Error(`version ${manifest.id} failed verification: ${bad.join(', ')}`);
}
