import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project folder (holding templates/), from this file's place in src/ or dist/. */
export function projectRoot(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..');
}
