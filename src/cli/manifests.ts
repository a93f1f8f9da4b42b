import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { API_VERSION, KIND, parseManifest, ValidationError, type CustomerManifest } from '../domain/customer.js';
import { parsePoolManifest, POOL_KIND, type PoolManifest } from '../domain/pool.js';
import { CliError } from './errors.js';

/**
 * Reads `-f` inputs (files, directories, `-` for stdin) into Customer manifests. Every document
 * is checked before any is used, and every problem is reported at once with its file, document
 * number and field, so one run shows everything to fix and nothing is half-applied.
 */

export interface ManifestDocument {
  /** The file the document came from, or `<stdin>`. */
  source: string;
  /** 1-based position of the document (or List item) in its source. */
  document: number;
  manifest: CustomerManifest;
  /** The document as written: what is sent to the server, which applies defaults itself. */
  raw: Record<string, unknown>;
}

/** A Pool document (a plan's warm pool size: domain/pool.ts). */
export interface PoolDocument {
  source: string;
  document: number;
  pool: PoolManifest;
  raw: Record<string, unknown>;
}

/** A document of either kind `apply` and `diff` take. */
export type AnyDocument = ManifestDocument | PoolDocument;

export function isPoolDocument(doc: AnyDocument): doc is PoolDocument {
  return 'pool' in doc;
}

export interface ManifestProblem {
  source: string;
  document?: number | undefined;
  field?: string | undefined;
  message: string;
}

export class ManifestError extends CliError {
  constructor(readonly problems: ManifestProblem[]) {
    super(
      problems.length === 1
        ? `${formatProblem(problems[0] as ManifestProblem)} (nothing was applied)`
        : `${problems.length} problems in the input (nothing was applied):\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`,
    );
    this.name = 'ManifestError';
  }
}

export function formatProblem(problem: ManifestProblem): string {
  const where = problem.document === undefined ? problem.source : `${problem.source}, document ${problem.document}`;
  return problem.field ? `${where}: ${problem.field}: ${problem.message}` : `${where}: ${problem.message}`;
}

export const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];
export const STDIN = '-';

export interface ReadOptions {
  /** Reads all of standard input (for `-f -`); injectable for tests. */
  readStdin?: () => Promise<string>;
}

/** Every Customer document of every input, validated; throws ManifestError listing all problems. */
export async function readManifests(inputs: string[], options: ReadOptions = {}): Promise<ManifestDocument[]> {
  return (await read(inputs, options, false)) as ManifestDocument[];
}

/** Every Customer and Pool document of every input, in input order, validated (for `apply` and `diff`). */
export function readDocuments(inputs: string[], options: ReadOptions = {}): Promise<AnyDocument[]> {
  return read(inputs, options, true);
}

async function read(inputs: string[], options: ReadOptions, pools: boolean): Promise<AnyDocument[]> {
  const problems: ManifestProblem[] = [];
  const documents: AnyDocument[] = [];
  for (const input of inputs) {
    for (const { source, text } of await readSources(input, options, problems)) {
      documents.push(...parseSource(source, text, problems, pools));
    }
  }
  problems.push(...duplicateNames(documents));
  if (problems.length > 0) throw new ManifestError(inInputOrder(problems));
  if (documents.length === 0) {
    throw new ManifestError([{ source: inputs.join(', '), message: `no ${pools ? 'Customer or Pool' : 'Customer'} documents found` }]);
  }
  return documents;
}

async function readSources(
  input: string,
  options: ReadOptions,
  problems: ManifestProblem[],
): Promise<Array<{ source: string; text: string }>> {
  if (input === STDIN) {
    const read = options.readStdin ?? readStdin;
    return [{ source: '<stdin>', text: await read() }];
  }
  let isDirectory: boolean;
  try {
    isDirectory = statSync(input).isDirectory();
  } catch (error) {
    problems.push({ source: input, message: describeFsError(error) });
    return [];
  }
  if (!isDirectory) return readOne(input, problems);
  // Like kubectl: the directory's manifest files, not recursive, in name order.
  const files = readdirSync(input)
    .filter((f) => MANIFEST_EXTENSIONS.includes(extname(f).toLowerCase()))
    .sort()
    .map((f) => join(input, f));
  if (files.length === 0) {
    problems.push({ source: input, message: `no ${MANIFEST_EXTENSIONS.join(', ')} files in this directory` });
    return [];
  }
  return files.flatMap((f) => readOne(f, problems));
}

function readOne(path: string, problems: ManifestProblem[]): Array<{ source: string; text: string }> {
  try {
    return [{ source: path, text: readFileSync(path, 'utf8') }];
  } catch (error) {
    problems.push({ source: path, message: describeFsError(error) });
    return [];
  }
}

/** Splits a source into documents (YAML streams, JSON objects, arrays and Lists) and checks each. */
export function parseSource(source: string, text: string, problems: ManifestProblem[], pools = false): AnyDocument[] {
  const values: Array<{ document: number; value: unknown }> = [];
  if (extname(source).toLowerCase() === '.json') {
    try {
      values.push({ document: 1, value: JSON.parse(text) });
    } catch (error) {
      problems.push({ source, document: 1, message: `not valid JSON: ${(error as Error).message}` });
      return [];
    }
  } else {
    // Positions count every `---` section, empty ones too, so "document 3" is the third section.
    parseAllDocuments(text).forEach((doc, i) => {
      if (doc.errors.length > 0) {
        for (const error of doc.errors) {
          problems.push({ source, document: i + 1, message: `not valid YAML: ${firstLine(error.message)}` });
        }
        return;
      }
      const value: unknown = doc.toJS();
      if (value !== null && value !== undefined) values.push({ document: i + 1, value });
    });
  }
  const documents: AnyDocument[] = [];
  for (const { document, value } of values) {
    for (const [k, item] of expandLists(value).entries()) {
      // Items of a List or array are numbered in order; a single object keeps its document number.
      const position = isList(value) ? k + 1 : document;
      const checked = checkDocument(source, position, item, problems, pools);
      if (checked) documents.push(checked);
    }
  }
  return documents;
}

/** `get -o yaml|json` prints a List; an array is accepted too, so either round-trips. */
function expandLists(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  if (isRecord(value) && isListKind(value['kind']) && Array.isArray(value['items'])) return value['items'];
  return [value];
}

function isList(value: unknown): boolean {
  return Array.isArray(value) || (isRecord(value) && isListKind(value['kind']));
}

function isListKind(kind: unknown): boolean {
  return kind === 'List' || kind === `${KIND}List` || kind === `${POOL_KIND}List`;
}

function checkDocument(
  source: string,
  document: number,
  value: unknown,
  problems: ManifestProblem[],
  pools: boolean,
): AnyDocument | undefined {
  const at = { source, document };
  const kinds = pools ? `kinds ${KIND} and ${POOL_KIND}` : `only kind ${KIND}`;
  if (!isRecord(value)) {
    problems.push({
      ...at,
      message: `must be a ${pools ? 'Customer or Pool' : 'Customer'} object (a mapping), not ${Array.isArray(value) ? 'a list' : typeof value}`,
    });
    return undefined;
  }
  // Kind and apiVersion first: the field errors of another kind's schema would only confuse.
  const pool = pools && value['kind'] === POOL_KIND;
  if (value['kind'] !== KIND && !pool) {
    const message =
      value['kind'] === undefined
        ? `is required: blytz manages ${pools ? kinds : `kind ${KIND}`} (apiVersion ${API_VERSION})`
        : `unknown kind ${JSON.stringify(value['kind'])}: blytz manages ${kinds} (apiVersion ${API_VERSION})`;
    problems.push({ ...at, field: 'kind', message });
    return undefined;
  }
  if (value['apiVersion'] !== API_VERSION) {
    const got = value['apiVersion'] === undefined ? 'it is missing' : `not ${JSON.stringify(value['apiVersion'])}`;
    problems.push({ ...at, field: 'apiVersion', message: `must be ${API_VERSION}, ${got}` });
    return undefined;
  }
  try {
    if (pool) return { source, document, pool: parsePoolManifest(value), raw: value };
    return { source, document, manifest: parseManifest(value), raw: value };
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    for (const cause of error.causes) problems.push({ ...at, field: cause.field, message: cause.message });
    return undefined;
  }
}

/** Sources in the order they were read, documents in file order (parse errors come first otherwise). */
function inInputOrder(problems: ManifestProblem[]): ManifestProblem[] {
  const order = new Map<string, number>();
  for (const p of problems) if (!order.has(p.source)) order.set(p.source, order.size);
  return problems
    .map((p, i) => ({ p, i }))
    .sort(
      (a, b) =>
        (order.get(a.p.source) ?? 0) - (order.get(b.p.source) ?? 0) || (a.p.document ?? 0) - (b.p.document ?? 0) || a.i - b.i,
    )
    .map(({ p }) => p);
}

function duplicateNames(documents: AnyDocument[]): ManifestProblem[] {
  const first = new Map<string, AnyDocument>();
  const problems: ManifestProblem[] = [];
  for (const doc of documents) {
    const key = objectName(doc);
    const earlier = first.get(key);
    if (earlier) {
      const what = isPoolDocument(doc) ? 'pool' : 'customer';
      problems.push({
        source: doc.source,
        document: doc.document,
        field: 'metadata.name',
        message: `duplicate name "${key.slice(key.indexOf('/') + 1)}": also in ${earlier.source}, document ${earlier.document} (one input may define each ${what} once)`,
      });
    } else {
      first.set(key, doc);
    }
  }
  return problems;
}

/** `customer/<name>` or `pool/<plan>`, as kubectl names objects. */
export function objectName(doc: AnyDocument): string {
  return isPoolDocument(doc) ? `pool/${doc.pool.metadata.name}` : `customer/${doc.manifest.metadata.name}`;
}

export function describeDocument(doc: AnyDocument): string {
  return `${objectName(doc)} (${doc.source}, document ${doc.document})`;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES') return 'permission denied';
  return (error as Error).message;
}

/** yaml's pretty errors append a code excerpt after the first line, which ends in a colon. */
function firstLine(text: string): string {
  return (text.split('\n')[0] ?? text).replace(/:$/, '');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
