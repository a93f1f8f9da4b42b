import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted at every level, so equal data always gives equal bytes. Used for
 * spec hashes and for "did anything change" comparisons (status writes, Caddy routes).
 *
 * Written out directly rather than as `JSON.stringify` of a key-sorted copy: a reconcile hashes
 * and compares several documents, and the copies were half of what a steady-state pass allocated.
 * The output is byte for byte what that copy gave (spec hashes are stored in container labels,
 * so it must never change): `toJSON` is honoured, `undefined`, functions and symbols are left out
 * of objects and written as `null` in arrays, and integer-like keys come first in numeric order,
 * as a JavaScript object orders its own keys.
 */
export function canonicalJson(value: unknown): string {
  return write(value) as string;
}

/** A short stable hash of any JSON-able value (16 hex characters of SHA-256). */
export function stableHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}

/**
 * Whether `a` and `b` have the same canonical JSON, mostly without writing it: plain data
 * (objects, arrays, strings, finite numbers, booleans, null, undefined fields) is compared where
 * it lies, anything else (a Date, a toJSON) by its JSON text. For "did the status change" on
 * every reconcile, where the answer is nearly always no.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (!isPlain(a) || !isPlain(b)) return canonicalJson(a) === canonicalJson(b);
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) {
      if (!sameJson(absent(a[i]) ? null : a[i], absent(b[i]) ? null : b[i])) return false;
    }
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let fields = 0;
  for (const key of Object.keys(x)) {
    if (absent(x[key])) continue;
    fields++;
    if (!Object.hasOwn(y, key) || !sameJson(x[key], y[key])) return false;
  }
  for (const key of Object.keys(y)) if (!absent(y[key])) fields--;
  return fields === 0;
}

/** What JSON leaves out of an object (and writes as null in an array). */
function absent(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

/** An object or array with no toJSON of its own (plain data, compared field by field). */
function isPlain(value: unknown): value is object {
  if (value === null || typeof value !== 'object') return false;
  return typeof (value as { toJSON?: unknown }).toJSON !== 'function';
}

/** The JSON text of `value`, or undefined where JSON has none (undefined, a function, a symbol). */
function write(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  // What JSON.stringify would write for it: a Date is its ISO string, not an empty object.
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return write((value as { toJSON(): unknown }).toJSON());
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += `${i === 0 ? '' : ','}${write(value[i]) ?? 'null'}`;
    return `${out}]`;
  }
  let out = '{';
  let first = true;
  for (const key of objectKeyOrder(sortInPlace(Object.keys(value)))) {
    const text = write((value as Record<string, unknown>)[key]);
    if (text === undefined) continue;
    out += `${first ? '' : ','}${JSON.stringify(key)}:${text}`;
    first = false;
  }
  return `${out}}`;
}

/**
 * Sorts strings by UTF-16 code units, as `Array.prototype.sort` does, in place: an insertion sort
 * for the handful of keys most objects have (the built-in sort allocates a work array each time).
 */
function sortInPlace(keys: string[]): string[] {
  if (keys.length > 32) return keys.sort();
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i] as string;
    let j = i - 1;
    while (j >= 0 && (keys[j] as string) > key) {
      keys[j + 1] = keys[j] as string;
      j--;
    }
    keys[j + 1] = key;
  }
  return keys;
}

/**
 * Sorted keys in the order an object built by inserting them holds them: array-index keys
 * ("0", "1", ... up to 2^32 - 2) first, ascending by value, then the rest as inserted.
 */
function objectKeyOrder(sorted: string[]): string[] {
  let indices: string[] | undefined;
  for (const key of sorted) if (isArrayIndex(key)) (indices ??= []).push(key);
  if (!indices) return sorted;
  indices.sort((a, b) => Number(a) - Number(b));
  return [...indices, ...sorted.filter((key) => !isArrayIndex(key))];
}

function isArrayIndex(key: string): boolean {
  const first = key.charCodeAt(0);
  if (first < 48 || first > 57) return false; // fast path: most keys start with a letter
  return /^(0|[1-9]\d*)$/.test(key) && Number(key) <= 4_294_967_294;
}
