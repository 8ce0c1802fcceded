/**
 * The `tierfs` command.  `format` and `serve` work on the flash tier and the
 * metadata directly; the other commands (status, stat, policy, pin, destage,
 * recall, fsck) will talk to a running daemon's admin socket.
 *
 * Every error is one line on stderr and a non-zero exit: 2 for a usage
 * mistake, 1 for anything else.  No stack trace for a user's mistake.
 */
import fs from 'node:fs';
import { constants } from '../constants';
import { serveForeground, type ServeConfig } from '../daemon/daemon';
import { TierfsError, isTierfsError } from '../errors';
import { formatFlashPath } from '../fs/fs';
import { parseOptions, parseSize, required } from './args';

const help = {
  main: `tierfs — a cloud-tiering file system appliance

Usage: tierfs <command> [options]

Commands:
  format   create a file system on a flash tier (a file or an NVMe namespace)
  serve    mount a file system and serve it in the foreground

Run "tierfs <command> --help" for the options of one command.
`,
  format: `Usage: tierfs format --flash PATH --meta DIR [--size SIZE] [--force]

Create a tierfs file system: a superblock on the flash tier and a metadata
database in DIR.

  --flash PATH   the flash tier: a block device (/dev/nvme0n1) or a file; a
                 missing file is created sparse with --size
  --size SIZE    size of a new flash file (default 4G; units K M G T, powers of 1024)
  --meta DIR     directory for the metadata database (created if missing)
  --force        format even if PATH or DIR already hold a file system or
                 other data (destroys it)

Examples:
  tierfs format --flash ./var/flash --size 8G --meta ./var/meta
  tierfs format --flash /dev/nvme1n1 --meta /var/lib/tierfs/meta
`,
  serve: `Usage: tierfs serve --flash PATH --meta DIR --mount DIR
       tierfs serve --config FILE

Mount a formatted file system at DIR and serve it in the foreground until
SIGINT or SIGTERM, which commit everything, unmount and exit 0.  A mount
point left dead by a crashed daemon is recovered.

  --flash PATH     the flash tier given to format
  --meta DIR       the metadata directory given to format
  --mount DIR      where to mount (created if missing)
  --config FILE    a JSON file with the keys flash, meta, mount and
                   optionally allowOther, direct, discard (true/false)
  --no-direct      use buffered I/O on the flash tier instead of O_DIRECT
  --discard        punch freed blocks out of a file-backed flash tier (gives
                   the space back to the host file system; costs write speed
                   there).  Block devices are always discarded.

Examples:
  tierfs serve --flash ./var/flash --meta ./var/meta --mount ./mnt
  tierfs serve --config /etc/tierfs/tierfs.json
`,
};

async function format(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    flash: { type: 'string' },
    meta: { type: 'string' },
    size: { type: 'string' },
    force: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.format);
  if (positionals.length > 0) throw new TierfsError('USAGE', `format: unexpected argument ${positionals[0]}`);
  const flash = required(values, 'flash', 'format');
  const meta = required(values, 'meta', 'format');
  const sizeBytes = values.size === undefined ? undefined : parseSize(values.size, '--size');
  if (sizeBytes !== undefined && sizeBytes < constants.flashSizeBytesMin)
    throw new TierfsError('USAGE', `--size: the flash tier needs at least ${constants.flashSizeBytesMin / 2 ** 20} MiB`);
  if (sizeBytes !== undefined && sizeBytes % constants.blockSizeBytes !== 0)
    throw new TierfsError('USAGE', `--size: must be a multiple of ${constants.blockSizeBytes} bytes`);
  const sb = await formatFlashPath(flash, meta, { force: values.force, sizeBytes });
  process.stdout.write(`formatted ${flash}: ${(sb.sizeBytes / 2 ** 30).toFixed(2)} GiB, file system ${sb.uuid}, metadata in ${meta}\n`);
}

function readConfig(file: string): ServeConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new TierfsError('USAGE', `--config ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new TierfsError('USAGE', `--config ${file}: expected a JSON object`);
  const allowed = ['flash', 'meta', 'mount', 'allowOther', 'direct', 'discard'];
  const config = parsed as Record<string, unknown>;
  for (const key of Object.keys(config)) {
    if (!allowed.includes(key)) throw new TierfsError('USAGE', `--config ${file}: unknown key "${key}" (known: ${allowed.join(', ')})`);
  }
  for (const key of ['flash', 'meta', 'mount']) {
    if (typeof config[key] !== 'string' || config[key] === '')
      throw new TierfsError('USAGE', `--config ${file}: "${key}" must be a non-empty string`);
  }
  for (const key of ['allowOther', 'direct', 'discard']) {
    if (config[key] !== undefined && typeof config[key] !== 'boolean')
      throw new TierfsError('USAGE', `--config ${file}: "${key}" must be true or false`);
  }
  return config as unknown as ServeConfig;
}

async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    flash: { type: 'string' },
    meta: { type: 'string' },
    mount: { type: 'string' },
    config: { type: 'string' },
    'no-direct': { type: 'boolean' },
    discard: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.serve);
  if (positionals.length > 0) throw new TierfsError('USAGE', `serve: unexpected argument ${positionals[0]}`);
  let config: ServeConfig;
  if (values.config !== undefined) {
    if (values.flash || values.meta || values.mount)
      throw new TierfsError('USAGE', 'serve: give either --config or --flash/--meta/--mount, not both');
    config = readConfig(values.config);
  } else {
    config = { flash: required(values, 'flash', 'serve'), meta: required(values, 'meta', 'serve'), mount: required(values, 'mount', 'serve') };
  }
  if (values['no-direct']) config.direct = false;
  if (values.discard) config.discard = true;
  if (fs.existsSync(config.mount) && !fs.statSync(config.mount).isDirectory())
    throw new TierfsError('USAGE', `serve: mount point ${config.mount} is not a directory`);
  await serveForeground(config);
}

const commands: Record<string, (argv: string[]) => Promise<void>> = { format, serve };

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(help.main);
    return command === undefined ? 2 : 0;
  }
  const run = commands[command];
  try {
    if (!run) throw new TierfsError('USAGE', `unknown command "${command}" (see tierfs --help)`);
    await run(rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    process.stderr.write(`tierfs: ${isTierfsError(error) ? error.message : (error as Error).message}\n`);
    return isTierfsError(error, 'USAGE') ? 2 : 1;
  }
}
