/**
 * tierfsd's lifecycle: open the flash tier and metadata, mount, serve until
 * SIGINT or SIGTERM, then unmount, commit and close.  A second signal while
 * shutting down is ignored, so an impatient Ctrl-C cannot cut a commit short.
 */
import path from 'node:path';
import { openFileSystem, type OpenFileSystem } from '../fs/fs';
import { FuseMount } from '../fuse/fuse';
import { log } from '../log';

export interface ServeConfig {
  flash: string;
  meta: string;
  mount: string;
  allowOther?: boolean;
  direct?: boolean;
  /** Punch freed ranges out of a file-backed flash tier (block devices always discard). */
  discard?: boolean;
}

export interface Daemon {
  opened: OpenFileSystem;
  mount: FuseMount;
  /** Resolves once the daemon has unmounted and closed. */
  stopped: Promise<void>;
  stop(reason: string): Promise<void>;
}

export async function startDaemon(config: ServeConfig): Promise<Daemon> {
  const opened = await openFileSystem(config.flash, config.meta, { direct: config.direct, discard: config.discard });
  const mount = new FuseMount(opened.fs, config.mount, { allowOther: config.allowOther });
  try {
    await mount.mount();
  } catch (error) {
    await opened.close();
    throw new Error(`cannot mount ${config.mount}: ${(error as Error).message}`, { cause: error });
  }
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => {
    stopping ??= (async () => {
      log.info('stopping', { reason });
      try {
        await mount.unmount();
      } catch (error) {
        log.error('unmount failed', { mount: config.mount, error });
      }
      await opened.close();
      log.info('stopped', { mount: config.mount });
      resolveStopped();
    })();
    return stopping;
  };
  log.info('serving', { mount: path.resolve(config.mount), flash: config.flash, meta: config.meta });
  return { opened, mount, stopped, stop };
}

/** Run in the foreground until a signal; the process exit code says how it ended. */
export async function serveForeground(config: ServeConfig): Promise<void> {
  const daemon = await startDaemon(config);
  const onSignal = (signal: NodeJS.Signals) => {
    daemon.stop(signal).catch((error) => {
      log.error('shutdown failed', { error });
      process.exitCode = 1;
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', () => log.info('SIGHUP ignored'));
  await daemon.stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}
