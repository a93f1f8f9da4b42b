import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, posix, relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { isDns1123Label } from '../domain/naming.js';
import type { TemplateManifest } from './workspace.js';

/**
 * `templates/<name>/template.json` and the files a template renders. Everything here is
 * operator-controlled input, but it is still validated: a bad manifest must fail with a message
 * naming the file and the field, not as a container that never comes up.
 */

export const MANIFEST_FILE = 'template.json';
/** Every file under this folder of a template is rendered to the same path in the customer folder. */
export const TEMPLATE_WORKSPACE_DIR = 'workspace';

export interface TemplateDefaults {
  image: string;
  containerPort: number;
}

/** A manifest with the configuration defaults filled in: image and containerPort are always set. */
export type ResolvedTemplate = TemplateManifest & { image: string; containerPort: number };

export interface TemplateSource {
  /** Relative POSIX path under the template's workspace folder, e.g. `AGENTS.md`. */
  path: string;
  content: string;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const absolutePath = (example: string) =>
  z
    .string()
    .refine(
      (path) => path.startsWith('/') && path !== '/' && posix.normalize(path) === path && !path.endsWith('/'),
      `must be a normalised absolute path other than "/", e.g. "${example}"`,
    );

const httpProbeSchema = z
  .object({
    path: z.string().regex(/^\/[^\s]*$/, 'must be an absolute URL path like "/healthz"'),
    // A probe must check what a healthy answer says, not only that something answered: the
    // OpenClaw gateway serves its Control UI with 200 on every path it does not know.
    expect: z
      .record(z.string().min(1), z.union([z.string(), z.number(), z.boolean()]))
      .refine((fields) => Object.keys(fields).length > 0, 'must name at least one field of the JSON body, e.g. {"ok": true}'),
  })
  .strict();

const probesSchema = z
  .object({ startup: httpProbeSchema.optional(), liveness: httpProbeSchema, readiness: httpProbeSchema })
  .strict();

/** How to see the assistant has taken a new configuration (see TokenProbe in domain/probes.ts). */
const configProbeSchema = z
  .object({
    path: z.string().regex(/^\/[^\s]*$/, 'must be an absolute URL path like "/readyz"'),
    authorizedField: z.string().min(1),
  })
  .strict();

const manifestSchema = z
  .object({
    name: z.string().optional(),
    image: z.string().trim().min(1, 'must not be empty').optional(),
    containerPort: z.number().int().min(1).max(65535).optional(),
    probes: probesSchema,
    configProbe: configProbeSchema.optional(),
    user: z
      .string()
      .regex(/^\d+:\d+$/, 'must be "uid:gid" in numbers, e.g. "1000:1000"')
      .refine((user) => !user.startsWith('0:'), 'must not be root (uid 0)'),
    mountPath: absolutePath('/home/node/.openclaw'),
    // The container's root is read-only; these folders are writable tmpfs (emptied on restart).
    tmpfs: z.array(absolutePath('/tmp')).max(8).default([]),
    startTimeoutSeconds: z.number().int().min(1).max(3600),
    updateStrategy: z.enum(['recreate', 'blueGreen']),
    env: z.record(z.string().regex(ENV_NAME, 'environment variable names must be letters, digits and _'), z.string()).default({}),
  })
  .strict();

export class TemplateManifestError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TemplateManifestError';
  }
}

/** The template's folder; the name must be a DNS-1123 label, so it can never leave `templatesDir`. */
export function templateDir(templatesDir: string, name: string): string {
  if (!isDns1123Label(name)) {
    throw new TemplateManifestError(
      `template name ${JSON.stringify(name)} is not a DNS-1123 label (lowercase letters, digits and -)`,
    );
  }
  const root = resolve(templatesDir);
  const dir = resolve(root, name);
  if (!dir.startsWith(root + sep)) throw new TemplateManifestError(`template name ${JSON.stringify(name)} leaves ${root}`);
  return dir;
}

export async function loadTemplateManifest(
  templatesDir: string,
  name: string,
  defaults: TemplateDefaults,
): Promise<ResolvedTemplate> {
  const file = join(templateDir(templatesDir, name), MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : String(error);
    throw new TemplateManifestError(`template "${name}": ${file} ${reason}`, { cause: error });
  }
  return parseTemplateManifest(text, file, name, defaults);
}

/** Parses and validates a manifest's text; `file` and `name` are for messages and the name check. */
export function parseTemplateManifest(text: string, file: string, name: string, defaults: TemplateDefaults): ResolvedTemplate {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new TemplateManifestError(`${file}: not valid JSON (${(error as Error).message})`, { cause: error });
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const field = issue.path.map(String).join('.') || '(root)';
      if (issue.code === 'unrecognized_keys') return `unknown field(s) ${issue.keys.join(', ')}`;
      if (issue.code === 'invalid_type' && issue.input === undefined) return `field "${field}" is required`;
      return `field "${field}" ${issue.message}`;
    });
    throw new TemplateManifestError(`${file}: ${problems.join('; ')}`);
  }
  const manifest = parsed.data;
  if (manifest.name !== undefined && manifest.name !== name) {
    throw new TemplateManifestError(`${file}: field "name" is "${manifest.name}" but the folder is "${name}"`);
  }
  const resolved: ResolvedTemplate = {
    name,
    image: manifest.image ?? defaults.image,
    containerPort: manifest.containerPort ?? defaults.containerPort,
    probes: {
      ...(manifest.probes.startup ? { startup: manifest.probes.startup } : {}),
      liveness: manifest.probes.liveness,
      readiness: manifest.probes.readiness,
    },
    ...(manifest.configProbe ? { configProbe: manifest.configProbe } : {}),
    tmpfs: manifest.tmpfs,
    user: manifest.user,
    mountPath: manifest.mountPath,
    startTimeoutSeconds: manifest.startTimeoutSeconds,
    updateStrategy: manifest.updateStrategy,
    env: manifest.env,
  };
  return resolved;
}

/** The template's workspace files, sorted by path so rendering does not depend on readdir order. */
export async function loadTemplateSources(templatesDir: string, name: string): Promise<TemplateSource[]> {
  const root = join(templateDir(templatesDir, name), TEMPLATE_WORKSPACE_DIR);
  const sources: TemplateSource[] = [];
  async function walk(dir: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && dir === root) return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) {
        sources.push({ path: relative(root, path).split(sep).join('/'), content: await readFile(path, 'utf8') });
      } else {
        // Symlinks could point anywhere on the host; a template is plain files only.
        const kind = (await lstat(path)).isSymbolicLink() ? 'a symlink' : 'not a regular file';
        throw new TemplateManifestError(`template "${name}": ${path} is ${kind}`);
      }
    }
  }
  await walk(root);
  return sources.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
