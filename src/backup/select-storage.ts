import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config.js';
import type { Guard } from '../resilience/guard.js';
import { LocalArchiveStorage } from './local-storage.js';
import { parseS3Url, S3ArchiveStorage } from './s3-storage.js';
import type { ArchiveStorage } from './storage.js';

/** BLYTZ_BACKUP_URL: where archives go (part of the composition root). */
export function selectArchiveStorage(
  config: Pick<
    Config,
    | 'BLYTZ_DATA_DIR'
    | 'BLYTZ_BACKUP_URL'
    | 'BLYTZ_BACKUP_S3_ENDPOINT'
    | 'BLYTZ_BACKUP_S3_REGION'
    | 'BLYTZ_BACKUP_S3_ACCESS_KEY_ID'
    | 'BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY'
  >,
  guard: Guard,
): ArchiveStorage {
  const url = config.BLYTZ_BACKUP_URL;
  if (!url) return new LocalArchiveStorage(join(config.BLYTZ_DATA_DIR, 'backups'));
  if (url.startsWith('file://')) return new LocalArchiveStorage(fileURLToPath(url));
  const { bucket, prefix } = parseS3Url(url);
  return new S3ArchiveStorage({
    bucket,
    prefix,
    region: config.BLYTZ_BACKUP_S3_REGION,
    endpoint: config.BLYTZ_BACKUP_S3_ENDPOINT,
    credentials:
      config.BLYTZ_BACKUP_S3_ACCESS_KEY_ID && config.BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY
        ? { accessKeyId: config.BLYTZ_BACKUP_S3_ACCESS_KEY_ID, secretAccessKey: config.BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY }
        : undefined,
    guard,
  });
}
