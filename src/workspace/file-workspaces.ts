import { lstat, readdir, rm } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { basename, dirname, join, resolve, sep } from 'node:path';
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
  SafeDir,
  setModeNoFollow,
  TEMP_PREFIX,
  withDir,
  withParent,
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
 * Folders are 0700 and everything belongs to the template's uid:gid. Non-secret files are 0644
 * because the 0700 folders already keep every other host user out; only secrets get the extra
 * 0600, so a copy of the folder made with permissions kept never spreads a token.
 *
 * The container writes this folder too, so nothing the controller keeps for itself lives in it:
 * the render marker (contentHash, the rendered paths, written last) is
 * `$dataDir/customers/.blytz/<name>.json`, a folder no container has mounted. Everything in the
 * customer folder is reached through safe-fs.ts (no link followed, nothing resolved twice).
 */

export interface FileWorkspacesOptions {
  dataDir: string;
  templatesDir: string;
  /** BLYTZ_CUSTOMER_IMAGE and BLYTZ_CONTAINER_PORT, for templates that do not set their own. */
  defaults: TemplateDefaults;
  /**
   * Who owns the files: `container` (default) the template's uid:gid, as a bind mount needs
   * (blytz must be root or that user); `controller` whoever blytz runs as, for folders no
   * container mounts (Kubernetes: the pod gets its files from a Secret, so the controller's
   * copy is its own, and the shipped controller runs as 10001, which may not chown).
   */
  ownership?: 'container' | 'controller';
  /**
   * The folder under `dataDir` the workspaces live in: `customers` (default), or `pool` for warm
   * pool slots' state folders (`pool/slot-<id>/`), which a claim moves into `customers/`.
   */
  folder?: string;
}

export const CUSTOMERS_DIR = 'customers';
/** Warm pool slots' state folders (see pool-folders.ts). */
export const POOL_DIR = 'pool';
/** The controller's own records, beside the customer folders (not a DNS-1123 name: never a customer's). */
export const RECORDS_DIR = '.blytz';
/** Where markers used to be, inside the customer folder; removed on the next write. */
export const LEGACY_MARKER_FILE = '.blytz-render.json';

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

/** The render marker of the customer folder `customerDir`: `<customers>/.blytz/<name>.json`. */
export function renderMarkerPath(customerDir: string): string {
  return join(dirname(customerDir), RECORDS_DIR, `${basename(customerDir)}.json`);
}

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
  private readonly ownership: 'container' | 'controller';

  constructor(options: FileWorkspacesOptions) {
    // Absolute, because these paths become Docker bind-mount sources.
    this.customersRoot = resolve(options.dataDir, options.folder ?? CUSTOMERS_DIR);
    this.templatesDir = resolve(options.templatesDir);
    this.defaults = options.defaults;
    this.ownership = options.ownership ?? 'container';
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

  /** The controller's record of the customer's last complete render (outside the customer folder). */
  markerPath(customer: string): string {
    return renderMarkerPath(this.customerDir(customer));
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
    const marker = await readMarker(this.markerPath(customer));
    // A rendered file deleted since (by hand, by the assistant) makes the workspace stale.
    if (!marker || !(await withDir(dir, (root) => allRegularFiles(root, marker.files)))) return { exists: true };
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
    const owner = this.ownership === 'container' ? chownTarget(parseOwner(rendered.template.user)) : undefined;

    ensurePrivateDir(this.customersRoot);
    ensurePrivateDir(join(this.customersRoot, RECORDS_DIR));
    await ensureDirectory(dir, DIR_MODE, owner);
    const markerPath = this.markerPath(customer);
    const previous = await readMarker(markerPath);
    // The marker goes first and comes back last: a crash in between leaves no marker, so the
    // folder counts as not current even if the spec later returns to the previous render.
    await rm(markerPath, { force: true });

    let ownedConfigHash: string | undefined;
    await withDir(dir, async (root) => {
      await root.unlinkFile(LEGACY_MARKER_FILE);
      for (const file of rendered.files) {
        const mode = file.secret ? SECRET_MODE : PLAIN_MODE;
        if (file.merge === 'openclaw-config') {
          const owned = JSON.parse(file.content) as JsonObject;
          ownedConfigHash = stableHash(ownedProjection(owned));
          await mergeConfigFile(join(dir, ...file.path.split('/')), owned, mode, owner);
          continue;
        }
        // Each folder on the way is opened (or made) without following a link, and the file is
        // written in the folder held open: a folder swapped for a link meanwhile leads nowhere.
        await withParent(
          root,
          file.path,
          async (folder, name) => {
            await folder.writeFile(name, file.content, mode, owner);
            await folder.sweepTempFiles();
            await folder.sync();
          },
          { mode: DIR_MODE, owner },
        );
      }
      // Files we rendered last time and no longer render (the template dropped them). Only paths
      // from our own marker (kept where no container writes), reached without following a link;
      // a folder the assistant made under such a name is its own and stays.
      for (const stale of previous?.files.filter((path) => !paths.includes(path)) ?? []) {
        if (isSafeRelativePath(stale)) await withParent(root, stale, (folder, name) => folder.unlinkFile(name));
      }
      await root.sweepTempFiles();
      await root.sync();
    });

    const marker: Marker = {
      contentHash: rendered.contentHash,
      template: rendered.template.name,
      files: paths,
      ...(ownedConfigHash === undefined ? {} : { ownedConfigHash }),
    };
    await writeFileAtomic(markerPath, `${JSON.stringify(marker, null, 2)}\n`, PLAIN_MODE, undefined);
  }

  async remove(customer: string): Promise<void> {
    // Every level opened without following a link: a planted link is unlinked, never its target.
    const name = this.customerDir(customer).slice(this.customersRoot.length + 1);
    const root = await SafeDir.open(this.customersRoot).catch(ignoreCode('ENOENT'));
    if (root) {
      try {
        await root.remove(name);
      } finally {
        await root.close();
      }
    }
    await rm(this.markerPath(customer), { force: true });
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

async function readMarker(path: string): Promise<Marker | undefined> {
  const text = await readRegularFile(path);
  if (text === undefined) return undefined;
  try {
    const parsed = markerSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // torn or hand-edited: treated as no marker, so the next write repairs it
  }
}

async function allRegularFiles(root: SafeDir, paths: readonly string[]): Promise<boolean> {
  for (const path of paths) {
    if (!isSafeRelativePath(path)) return false;
    if (!(await withParent(root, path, (folder, name) => folder.isRegularFile(name)))) return false;
  }
  return true;
}

function isSafeRelativePath(path: string): boolean {
  if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0')) return false;
  return path
    .split('/')
    .every(
      (segment) =>
        segment !== '' && segment !== '.' && segment !== '..' && segment !== LEGACY_MARKER_FILE && !segment.startsWith(TEMP_PREFIX),
    );
}

function checkRelativePath(path: string): string {
  if (!isSafeRelativePath(path))
    throw new InvalidWorkspacePathError(`rendered file path ${JSON.stringify(path)} is not a safe relative path`);
  return path;
}
