import { lstat, readdir, rm } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { dirname, join, resolve, sep } from 'node:path';
import { stableHash } from '../domain/canonical-json.js';
import { z } from 'zod';
import { ensurePrivateDir } from '../data-dir.js';
import { isDns1123Label } from '../domain/naming.js';
import { applyOwnedConfig, ownedProjection, serializeOpenClawConfig, type JsonObject } from './openclaw-config.js';
import { OPENCLAW_CONFIG_FILE, renderWorkspace } from './render.js';
import {
  chownTarget,
  ensureDirectory,
  ignoreCode,
  parseOwner,
  readRegularFile,
  setModeNoFollow,
  sweepTempFiles,
  syncDirectory,
  TEMP_PREFIX,
  writeFileAtomic,
  type Owner,
} from './safe-fs.js';
import { loadTemplateManifest, loadTemplateSources, type ResolvedTemplate, type TemplateDefaults } from './template-manifest.js';
import type { Mount, ObservedWorkspace, RenderedWorkspace, TemplateManifest, WorkspaceInput, Workspaces } from './workspace.js';

/**
 * Workspaces as folders on the local disk: `$dataDir/customers/<name>/`, bind-mounted into the
 * customer's container.
 *
 * Layout of a customer folder (OpenClaw's state folder, mounted read-write at the template's
 * mountPath):
 *   workspace/AGENTS.md, USER.md, SOUL.md   rendered, 0644 (the agent's workspace)
 *   workspace/memory/...                    written by the assistant; never touched by us
 *   openclaw.json                           shared, secret (0600): our fields merged into what
 *                                           OpenClaw wrote (openclaw-config.ts)
 *   everything else                         OpenClaw's own state (sessions, databases, pairings)
 *   .blytz-render.json                      marker: contentHash + rendered paths, written last
 * Folders are 0700 and everything belongs to the template's uid:gid. Non-secret files are 0644
 * because the 0700 folders already keep every other host user out; only secrets get the extra
 * 0600, so a copy of the folder made with permissions kept never spreads a token.
 */

export interface FileWorkspacesOptions {
  dataDir: string;
  templatesDir: string;
  /** BLYTZ_CUSTOMER_IMAGE and BLYTZ_CONTAINER_PORT, for templates that do not set their own. */
  defaults: TemplateDefaults;
}

export const CUSTOMERS_DIR = 'customers';
export const MARKER_FILE = '.blytz-render.json';

const DIR_MODE = 0o700;
const SECRET_MODE = 0o600;
const PLAIN_MODE = 0o644;

const markerSchema = z.object({
  contentHash: z.string().min(1),
  template: z.string(),
  files: z.array(z.string()),
  /** Hash of our fields of openclaw.json as last written: the assistant editing one makes the folder stale. */
  ownedConfigHash: z.string().optional(),
});
type Marker = z.infer<typeof markerSchema>;

export class InvalidWorkspacePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidWorkspacePathError';
  }
}

export class FileWorkspaces implements Workspaces {
  private readonly customersRoot: string;
  private readonly templatesDir: string;
  private readonly defaults: TemplateDefaults;

  constructor(options: FileWorkspacesOptions) {
    // Absolute, because these paths become Docker bind-mount sources.
    this.customersRoot = resolve(options.dataDir, CUSTOMERS_DIR);
    this.templatesDir = resolve(options.templatesDir);
    this.defaults = options.defaults;
  }

  /**
   * The customer's folder. The name must be a DNS-1123 label (no `/`, `.`, NUL, at most 63
   * characters), and the resolved path is checked again to be a direct child of the customers
   * folder: two independent guards, so one bug cannot let a name escape.
   */
  customerDir(customer: string): string {
    if (!isDns1123Label(customer)) {
      throw new InvalidWorkspacePathError(`customer name ${JSON.stringify(customer)} is not a DNS-1123 label`);
    }
    const dir = resolve(this.customersRoot, customer);
    if (dirname(dir) !== this.customersRoot || !dir.startsWith(this.customersRoot + sep)) {
      throw new InvalidWorkspacePathError(`customer name ${JSON.stringify(customer)} leaves ${this.customersRoot}`);
    }
    return dir;
  }

  /** The manifest with image and containerPort filled in from the defaults when absent. */
  loadTemplate(name: string): Promise<ResolvedTemplate> {
    return loadTemplateManifest(this.templatesDir, name, this.defaults);
  }

  async render(input: WorkspaceInput): Promise<RenderedWorkspace> {
    const template = await this.loadTemplate(input.template);
    const sources = await loadTemplateSources(this.templatesDir, input.template);
    return renderWorkspace(template, sources, input);
  }

  async observe(customer: string): Promise<ObservedWorkspace> {
    const dir = this.customerDir(customer);
    const stat = await lstat(dir).catch(ignoreCode('ENOENT'));
    if (!stat) return { exists: false };
    if (!stat.isDirectory()) return { exists: true };
    const marker = await readMarker(dir);
    // A rendered file deleted since (by hand, by the assistant) makes the workspace stale.
    if (!marker || !(await allRegularFiles(dir, marker.files))) return { exists: true };
    // So does a field of ours in openclaw.json changed since (the assistant has a shell).
    if (marker.ownedConfigHash !== undefined) {
      const current = await readConfig(join(dir, OPENCLAW_CONFIG_FILE));
      if (!current || stableHash(ownedProjection(current)) !== marker.ownedConfigHash) return { exists: true };
    }
    return { exists: true, contentHash: marker.contentHash };
  }

  async write(customer: string, rendered: RenderedWorkspace): Promise<void> {
    const dir = this.customerDir(customer);
    const paths = rendered.files.map((file) => checkRelativePath(file.path));
    if (new Set(paths).size !== paths.length) throw new InvalidWorkspacePathError('rendered files contain a path twice');
    const owner = chownTarget(parseOwner(rendered.template.user));

    ensurePrivateDir(this.customersRoot);
    await ensureDirectory(dir, DIR_MODE, owner);
    const previous = await readMarker(dir);
    // The marker goes first and comes back last: a crash in between leaves no marker, so the
    // folder counts as not current even if the spec later returns to the previous render.
    await rm(join(dir, MARKER_FILE), { force: true });

    const touched = new Set<string>([dir]);
    let ownedConfigHash: string | undefined;
    for (const file of rendered.files) {
      const target = join(dir, ...file.path.split('/'));
      await ensureParents(dir, file.path, owner, touched);
      const mode = file.secret ? SECRET_MODE : PLAIN_MODE;
      if (file.merge === 'openclaw-config') {
        const owned = JSON.parse(file.content) as JsonObject;
        ownedConfigHash = stableHash(ownedProjection(owned));
        await mergeConfigFile(target, owned, mode, owner);
      } else {
        await writeFileAtomic(target, file.content, mode, owner);
      }
    }
    // Files we rendered last time and no longer render (the template dropped them). Only paths
    // from our own marker: anything else in the folder is the assistant's.
    for (const stale of previous?.files.filter((path) => !paths.includes(path)) ?? []) {
      if (isSafeRelativePath(stale))
        await rm(join(dir, ...stale.split('/')), { force: true }).catch(ignoreCode('EISDIR', 'ERR_FS_EISDIR'));
    }
    for (const folder of touched) {
      await sweepTempFiles(folder);
      await syncDirectory(folder);
    }

    const marker: Marker = {
      contentHash: rendered.contentHash,
      template: rendered.template.name,
      files: paths,
      ...(ownedConfigHash === undefined ? {} : { ownedConfigHash }),
    };
    await writeFileAtomic(join(dir, MARKER_FILE), `${JSON.stringify(marker, null, 2)}\n`, PLAIN_MODE, owner);
    await syncDirectory(dir);
  }

  async remove(customer: string): Promise<void> {
    // rm does not follow symlinks inside the tree: a planted link is unlinked, not its target.
    await rm(this.customerDir(customer), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    const entries = await readdir(this.customersRoot, { withFileTypes: true }).catch(ignoreCode('ENOENT'));
    return (entries ?? [])
      .filter((entry) => entry.isDirectory() && isDns1123Label(entry.name))
      .map((entry) => entry.name)
      .sort();
  }

  mounts(customer: string, template: TemplateManifest): Mount[] {
    // One read-write mount of the whole state folder. openclaw.json is not mounted read-only over
    // it: OpenClaw renames its own config into place (key migrations at start, the owner after the
    // first pairing approval), which a single-file bind mount refuses (EBUSY, exit 78). The
    // controller enforces its own fields on every render instead (openclaw-config.ts).
    return [{ hostPath: this.customerDir(customer), containerPath: template.mountPath, readOnly: false }];
  }
}

/**
 * Merges our fields into the config on disk, keeping everything OpenClaw wrote; writes only when
 * the result differs, so a render that changes nothing of ours leaves the file (and the running
 * gateway, which watches it) alone. A file that is not a JSON object (torn by hand, replaced by
 * the assistant) cannot be merged: ours are written over an empty config, and the old bytes are
 * kept beside it for support.
 */
async function mergeConfigFile(path: string, owned: JsonObject, mode: number, owner: Owner | undefined): Promise<void> {
  const text = await readRegularFile(path, MAX_CONFIG_BYTES);
  let current: JsonObject = {};
  if (text !== undefined) {
    const parsed = parseConfig(text);
    if (parsed) current = parsed;
    else await writeFileAtomic(`${path}.unreadable`, text, SECRET_MODE, owner);
  }
  const merged = applyOwnedConfig(current, owned);
  // Compared as data, not bytes: OpenClaw formats the file its own way. Unchanged, it still
  // holds tokens, so it keeps (or gets back) its private mode.
  if (text !== undefined && isDeepStrictEqual(merged, current)) return setModeNoFollow(path, mode, owner);
  await writeFileAtomic(path, serializeOpenClawConfig(merged), mode, owner);
}

/** openclaw.json may be written by the assistant: bounded, no symlinks, an object or nothing. */
const MAX_CONFIG_BYTES = 1024 * 1024;

async function readConfig(path: string): Promise<JsonObject | undefined> {
  const text = await readRegularFile(path, MAX_CONFIG_BYTES);
  return text === undefined ? undefined : parseConfig(text);
}

function parseConfig(text: string): JsonObject | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}

async function readMarker(dir: string): Promise<Marker | undefined> {
  const text = await readRegularFile(join(dir, MARKER_FILE));
  if (text === undefined) return undefined;
  try {
    const parsed = markerSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // torn or hand-edited: treated as no marker, so the next write repairs it
  }
}

async function allRegularFiles(dir: string, paths: readonly string[]): Promise<boolean> {
  for (const path of paths) {
    if (!isSafeRelativePath(path)) return false;
    const stat = await lstat(join(dir, ...path.split('/'))).catch(() => undefined);
    if (!stat?.isFile()) return false;
  }
  return true;
}

/** Creates the folders between the customer folder and `path`'s file, one component at a time. */
async function ensureParents(dir: string, path: string, owner: Owner | undefined, touched: Set<string>): Promise<void> {
  const segments = path.split('/').slice(0, -1);
  let current = dir;
  for (const segment of segments) {
    current = join(current, segment);
    await ensureDirectory(current, DIR_MODE, owner);
    touched.add(current);
  }
}

function isSafeRelativePath(path: string): boolean {
  if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0')) return false;
  return path
    .split('/')
    .every(
      (segment) =>
        segment !== '' && segment !== '.' && segment !== '..' && segment !== MARKER_FILE && !segment.startsWith(TEMP_PREFIX),
    );
}

function checkRelativePath(path: string): string {
  if (!isSafeRelativePath(path))
    throw new InvalidWorkspacePathError(`rendered file path ${JSON.stringify(path)} is not a safe relative path`);
  return path;
}
