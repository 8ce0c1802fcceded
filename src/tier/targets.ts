/**
 * Target URLs → ObjectStores.  The scheme picks the backend; query
 * parameters are only those the backend knows (a misspelt one is an error,
 * not silently ignored); credentials in the URL are refused.
 */
import path from 'node:path';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { FileObjectStore } from './file_object_store';
import type { ObjectStore } from './object_store';

export type TargetUrl =
  | { scheme: 'file'; directory: string }
  | { scheme: 's3'; bucket: string; prefix: string; endpoint?: string; region?: string }
  | { scheme: 'azure'; container: string; prefix: string; endpoint?: string };

const allowedParams: Record<string, string[]> = { file: [], s3: ['endpoint', 'region'], azure: ['endpoint'] };

export function parseTargetUrl(text: string): TargetUrl {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TierfsError('USAGE', `target ${JSON.stringify(text)} is not a URL (file:///dir, s3://bucket/prefix, azure://container/prefix)`);
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (!(scheme in allowedParams)) throw new TierfsError('USAGE', `target scheme ${scheme}: is not supported (file, s3, azure)`);
  if (url.username || url.password) throw new TierfsError('USAGE', 'credentials do not belong in the target URL; use the SDK environment');
  for (const key of url.searchParams.keys())
    if (!allowedParams[scheme].includes(key)) throw new TierfsError('USAGE', `target parameter ${key} is not known for ${scheme}: targets`);
  const endpoint = url.searchParams.get('endpoint') ?? undefined;
  if (endpoint !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(endpoint);
    } catch {
      throw new TierfsError('USAGE', `target endpoint ${JSON.stringify(endpoint)} is not a URL`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TierfsError('USAGE', `target endpoint must be http or https`);
  }
  const prefix = decodeURIComponent(url.pathname.replace(/^\/+/, '').replace(/\/+$/, ''));
  if (prefix.split('/').some((s) => s === '.' || s === '..')) throw new TierfsError('USAGE', 'target prefix must not contain . or .. segments');
  switch (scheme) {
    case 'file': {
      if (url.host !== '') throw new TierfsError('USAGE', 'file targets are file:///absolute/dir (no host)');
      const directory = decodeURIComponent(url.pathname);
      if (!path.isAbsolute(directory) || directory === '/') throw new TierfsError('USAGE', 'file target needs an absolute directory other than /');
      return { scheme, directory: path.normalize(directory) };
    }
    case 's3':
      if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(url.hostname)) throw new TierfsError('USAGE', `s3 bucket name ${JSON.stringify(url.hostname)} is not valid`);
      return { scheme, bucket: url.hostname, prefix, endpoint, region: url.searchParams.get('region') ?? undefined };
    default:
      if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(url.hostname))
        throw new TierfsError('USAGE', `azure container name ${JSON.stringify(url.hostname)} is not valid`);
      return { scheme: 'azure', container: url.hostname, prefix, endpoint };
  }
}

/** The backend for a target URL (no retries: wrap it in RetryingObjectStore). */
export function openObjectStore(text: string): ObjectStore {
  const target = parseTargetUrl(text);
  const parts = { partSizeBytes: constants.uploadPartSizeBytes, partConcurrency: constants.uploadPartConcurrency };
  switch (target.scheme) {
    case 'file':
      return new FileObjectStore(target.directory);
    // Each SDK takes a tenth of a second or more to load: only a process that opens such a target pays for it.
    case 's3': {
      const { S3ObjectStore } = require('./s3_object_store') as typeof import('./s3_object_store');
      return new S3ObjectStore({ ...target, ...parts });
    }
    case 'azure': {
      const { AzureObjectStore } = require('./azure_object_store') as typeof import('./azure_object_store');
      return new AzureObjectStore({ ...target, ...parts });
    }
  }
}
