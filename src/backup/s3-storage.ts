import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  NoSuchKey,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Guard } from '../resilience/guard.js';
import { isTransient } from '../resilience/transient.js';
import { ArchiveNotFoundError, checkKey, type ArchiveStorage } from './storage.js';

/**
 * Archives in an S3-compatible bucket through the AWS SDK (`BLYTZ_BACKUP_URL=s3://bucket/prefix`).
 * Uploads go through lib-storage's `Upload`: one PUT for small archives, a multipart upload in
 * 16 MiB parts for large ones, so a 1 GB archive never sits in memory; an object becomes visible
 * only when the upload completes, and an upload cut short is aborted (a crash leaves an
 * incomplete multipart upload, invisible to readers; a bucket lifecycle rule clears those).
 * Every call goes through the `backup` guard (timeout, retries, breaker).
 */

export interface S3StorageOptions {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing slash ('' for none). */
  prefix: string;
  region: string;
  /** An S3-compatible endpoint (MinIO, Ceph, a test server); path-style addressing is used with it. */
  endpoint?: string | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  guard: Guard;
}

const PART_BYTES = 16 * 1024 * 1024;
/** A whole upload of a large archive over a slow link: longer than the guard's default. */
const UPLOAD_TIMEOUT_MS = 30 * 60_000;

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const parsed = new URL(url);
  if (parsed.protocol !== 's3:' || !parsed.hostname) throw new Error(`not an s3://bucket/prefix URL: ${url}`);
  return { bucket: parsed.hostname, prefix: parsed.pathname.replace(/^\/+|\/+$/g, '') };
}

export class S3ArchiveStorage implements ArchiveStorage {
  readonly description: string;
  readonly #client: S3Client;
  readonly #options: S3StorageOptions;

  constructor(options: S3StorageOptions) {
    this.#options = options;
    this.description = `s3://${options.bucket}${options.prefix ? `/${options.prefix}` : ''}`;
    const config: S3ClientConfig = {
      region: options.region,
      // Checksums only where S3 requires them: the newer default (CRC32 trailers on every upload)
      // is not understood by many S3-compatible servers. Integrity is ours anyway: every chunk of
      // an archive is authenticated, and its sha256 is in the record.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Retries are the guard's (one policy per dependency, with its breaker).
      maxAttempts: 1,
      ...(options.endpoint ? { endpoint: options.endpoint, forcePathStyle: true } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
    };
    this.#client = new S3Client(config);
  }

  #key(key: string): string {
    checkKey(key);
    return this.#options.prefix ? `${this.#options.prefix}/${key}` : key;
  }

  async put(key: string, path: string, _sizeBytes?: number): Promise<void> {
    await this.#options.guard(
      'put',
      async (signal) => {
        const upload = new Upload({
          client: this.#client,
          params: { Bucket: this.#options.bucket, Key: this.#key(key), Body: createReadStream(path) },
          partSize: PART_BYTES,
          queueSize: 2,
          leavePartsOnError: false,
        });
        const abort = () => void upload.abort().catch(() => {});
        signal.addEventListener('abort', abort, { once: true });
        try {
          await upload.done();
        } finally {
          signal.removeEventListener('abort', abort);
        }
      },
      { timeoutMs: UPLOAD_TIMEOUT_MS },
    );
  }

  async get(key: string): Promise<Readable> {
    return this.#options.guard('get', async (signal) => {
      try {
        const result = await this.#client.send(new GetObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }), {
          abortSignal: signal,
        });
        if (!result.Body) throw new ArchiveNotFoundError(key, this.description);
        return result.Body as Readable;
      } catch (error) {
        if (error instanceof NoSuchKey || (error as { name?: string }).name === 'NoSuchKey')
          throw new ArchiveNotFoundError(key, this.description);
        throw error;
      }
    });
  }

  async delete(key: string): Promise<void> {
    await this.#options.guard('delete', (signal) =>
      this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }), { abortSignal: signal }),
    );
  }

  async ping(): Promise<void> {
    await this.#options.guard(
      'ping',
      (signal) => this.#client.send(new HeadBucketCommand({ Bucket: this.#options.bucket }), { abortSignal: signal }),
      { retry: false },
    );
  }

  destroy(): void {
    this.#client.destroy();
  }
}

/** The SDK's errors carry the status in `$metadata`; a `server` fault is worth another try. */
export function isTransientS3(error: unknown): boolean {
  const e = error as { $fault?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  const status = e?.$metadata?.httpStatusCode;
  if (typeof status === 'number') return status >= 500 || status === 429 || status === 408;
  if (e?.$fault === 'server') return true;
  return isTransient(error);
}
