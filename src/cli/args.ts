/**
 * Command-line values: sizes ("4G", "512MiB", "1048576") and option parsing
 * that turns every mistake into a TierfsError('USAGE') with one clear line.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TierfsError } from '../errors';

const sizeUnits: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
};

/** Bytes from "4G", "512MiB", "1.5T" or a plain number; units are powers of 1024. */
export function parseSize(text: string, what: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? sizeUnits[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new TierfsError('USAGE', `${what}: "${text}" is not a size (examples: 4G, 512MiB, 1048576)`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new TierfsError('USAGE', `${what}: "${text}" is too large`);
  return bytes;
}

export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true });
  } catch (error) {
    throw new TierfsError('USAGE', (error as Error).message.split('\n')[0]);
  }
}

export function required(values: Record<string, unknown>, name: string, command: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new TierfsError('USAGE', `${command}: --${name} is required (see tierfs ${command} --help)`);
  return value;
}

export function noArguments(positionals: string[], command: string): void {
  if (positionals.length > 0) throw new TierfsError('USAGE', `${command}: unexpected argument ${positionals[0]}`);
}
