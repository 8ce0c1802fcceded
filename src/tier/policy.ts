/**
 * Policies: rules matched by path that say whether, when and how a file's
 * extents leave flash.
 *
 *   auto   destage an extent once it has not been touched for coolAfter;
 *          evict it under the watermarks, coldest first
 *   pin    never leaves flash (neither destaged nor evicted)
 *   all    destaged as soon as written; stays on flash while hot, evicted first
 *   never  no object copy at all: stays on flash
 *
 * Globs are matched against the path from the file system's root: "*" and
 * "?" stay within one path segment, "**" crosses segments; a glob without a
 * "/" matches the file name in any directory ("*.iso").  When several match,
 * the most specific wins: the one with the most literal characters, then
 * the name in alphabetical order.  No match: the default policy (auto, with
 * the configured cooling period).  A file with several hard links follows
 * the path of its first link.
 */
import { constants } from '../constants';
import { TierfsError } from '../errors';
import type { PolicyMode, PolicyRecord } from '../meta/meta_store';

export const policyModes: readonly PolicyMode[] = ['auto', 'pin', 'all', 'never'];
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function globToRegExp(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      const slashAfter = glob[i + 2] === '/';
      source += slashAfter ? '(?:.*/)?' : '.*';
      i += slashAfter ? 2 : 1;
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else source += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return glob.includes('/') ? new RegExp(`^${source}$`) : new RegExp(`(?:^|/)${source}$`);
}

function literalLength(glob: string): number {
  return glob.replace(/[*?]/g, '').length;
}

/** Check a policy from a user; throws USAGE with one clear line. */
export function validatePolicy(p: PolicyRecord): PolicyRecord {
  if (!NAME_PATTERN.test(p.name)) throw new TierfsError('USAGE', `policy name ${JSON.stringify(p.name)}: letters, digits, _ . - (at most 64, starting with a letter or digit)`);
  if (p.name === 'default') throw new TierfsError('USAGE', 'policy name "default" is reserved for the rule that applies when none matches');
  if (!policyModes.includes(p.mode)) throw new TierfsError('USAGE', `policy mode ${JSON.stringify(p.mode)}: one of ${policyModes.join(', ')}`);
  if (typeof p.pathGlob !== 'string' || p.pathGlob === '' || p.pathGlob.length > 4096 || p.pathGlob.includes('\0'))
    throw new TierfsError('USAGE', 'policy path: a non-empty glob such as /projects/** or *.iso');
  if (p.pathGlob.includes('/') && !p.pathGlob.startsWith('/'))
    throw new TierfsError('USAGE', `policy path ${p.pathGlob}: a glob with a / starts at the root (/...)`);
  if (!Number.isSafeInteger(p.coolAfterMs) || p.coolAfterMs < 0) throw new TierfsError('USAGE', 'policy cooling period must be a duration >= 0');
  if (!Number.isSafeInteger(p.sizeBytesMin) || p.sizeBytesMin < 0) throw new TierfsError('USAGE', 'policy minimum size must be a size >= 0');
  if (typeof p.target !== 'string' || !NAME_PATTERN.test(p.target)) throw new TierfsError('USAGE', `policy target ${JSON.stringify(p.target)}: the name of a target (tierfs target list)`);
  if (p.durable !== 'flash' && p.durable !== 'object') throw new TierfsError('USAGE', `policy durability ${JSON.stringify(p.durable)}: flash or object`);
  if (p.durable === 'object' && (p.mode === 'never' || p.mode === 'pin'))
    throw new TierfsError('USAGE', `policy mode ${p.mode} keeps files out of the bucket: --durable object does not apply`);
  if (p.durable === 'object' && p.sizeBytesMin > 0) throw new TierfsError('USAGE', 'policy --durable object takes files of every size: --min-size does not apply');
  return p;
}

/** Milliseconds from "90s", "15m", "2h", "7d", "0" or a plain number of seconds. */
export function parseDuration(text: string, what: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(text);
  if (!match) throw new TierfsError('USAGE', `${what}: "${text}" is not a duration (examples: 30s, 15m, 2h, 7d)`);
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[match[2] ?? 's']!;
  const ms = Math.round(Number(match[1]) * unitMs);
  if (!Number.isSafeInteger(ms)) throw new TierfsError('USAGE', `${what}: "${text}" is too long`);
  return ms;
}

export class PolicySet {
  private readonly compiled: { policy: PolicyRecord; pattern: RegExp; weight: number }[];
  /** Whether any policy makes fsync wait for the bucket (fsync of every other file skips the path lookup). */
  readonly anyDurableObject: boolean;

  constructor(
    policies: PolicyRecord[],
    readonly defaultPolicy: PolicyRecord,
  ) {
    this.compiled = policies
      .map((policy) => ({ policy, pattern: globToRegExp(policy.pathGlob), weight: literalLength(policy.pathGlob) }))
      .sort((a, b) => b.weight - a.weight || a.policy.name.localeCompare(b.policy.name));
    this.anyDurableObject = policies.some((p) => p.durable === 'object');
  }

  /** The policy for a path ("/a/b"). */
  match(path: string): PolicyRecord {
    for (const { policy, pattern } of this.compiled) if (pattern.test(path)) return policy;
    return this.defaultPolicy;
  }

  /** Every policy matching a path, the one that applies first (policy explain). */
  matches(path: string): PolicyRecord[] {
    return this.compiled.filter(({ pattern }) => pattern.test(path)).map(({ policy }) => policy);
  }
}

/** Watermarks are percentages of the flash tier, low below high; throws USAGE with one line. */
export function checkWatermarks(highPercent: unknown, lowPercent: unknown, where = 'watermarks'): void {
  for (const [name, value] of [['high', highPercent], ['low', lowPercent]] as const)
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= 100)
      throw new TierfsError('USAGE', `${where}: the ${name} watermark must be a number of percent between 0 and 100 (exclusive)`);
  if ((lowPercent as number) >= (highPercent as number))
    throw new TierfsError('USAGE', `${where}: the low watermark (${lowPercent}%) must be below the high one (${highPercent}%)`);
}

/** serve's uploadConcurrency (packs uploading at once): a whole number from 1 to uploadCountMaxLimit. */
export function checkUploadConcurrency(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > constants.uploadCountMaxLimit)
    throw new TierfsError('USAGE', `${where} must be a whole number from 1 to ${constants.uploadCountMaxLimit}`);
  return value;
}
