/**
 * The `tierfs` command.  `format`, `serve`, `firstboot`, `restore` and `promote` work on the flash
 * tier and the metadata directly (local.ts, loaded only when one of them
 * runs); the other commands talk to a running daemon's admin socket and
 * never open the metadata behind its back.  A command loads only what it
 * needs: `tierfs status` must start about as fast as node itself.
 *
 * Every error is one line on stderr and a non-zero exit: 2 for a usage
 * mistake, 1 for anything else.  No stack trace for a user's mistake.
 */
import { TierfsError, isTierfsError } from '../errors';
import { daemonCommands } from './commands';
import { share } from './share';

const mainHelp = `tierfs — a cloud-tiering file system appliance

Usage: tierfs <command> [options]

Commands:
  format     create a file system on a flash tier (a file or an NVMe namespace)
  serve      mount a file system and serve it in the foreground
  firstboot  the appliance's first boot: find NVMe, format, write the config
  status     the tiers, rates, errors, target health and watermarks of a running daemon
  stat       residency and heat of files; a directory as a listing
  heat       bytes by time since last access, as a histogram
  destage    copy files' extents to the object tier now
  recall     bring files' extents back to flash
  release    drop the flash copy of extents already in the object tier
  pin        keep files on flash whatever the policies (unpin undoes it)
  policy     add, edit, list, show, remove, explain and simulate policies
  fsck       check (and --repair) metadata against flash and packs
  watermark  show or set the flash watermarks at run time
  target     list, add, test and remove object targets
  lost       files whose newest data was only on a lost flash tier
  followers  the followers of this file system and how far behind each is
  share      NFS and SMB shares of the file system, and Samba users
  restore    rebuild a file system from its bucket (or --list what a bucket holds)
  promote    make a stopped follower (serve --follow) the writer, once the lease is free

Commands other than format and serve talk to the daemon's admin socket:
--socket PATH, else $TIERFS_SOCKET, else /run/tierfs/admin.sock.  Most take
--json.  Exit status: 0 done, 1 failed, 2 a usage mistake (fsck: see its help).

Run "tierfs <command> --help" for the options of one command.
`;

/** The commands of local.ts, loaded when one of them runs. */
const localCommandNames = ['format', 'serve', 'firstboot', 'restore', 'promote'] as const;
type LocalCommandName = (typeof localCommandNames)[number];

function localCommand(name: LocalCommandName): (argv: string[]) => Promise<void> {
  return async (argv) => (await import('./local')).localCommands[name](argv);
}

const commands: Record<string, (argv: string[]) => Promise<void>> = {
  ...Object.fromEntries(localCommandNames.map((name) => [name, localCommand(name)])),
  ...daemonCommands,
  share,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(mainHelp);
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
