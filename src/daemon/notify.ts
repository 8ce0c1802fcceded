/**
 * The systemd notify protocol (sd_notify(3)) for a Type=notify service:
 * READY=1 once the mount serves, STATUS= with key figures, WATCHDOG=1 from
 * the event loop at half the WatchdogSec systemd asked for (so a hung event
 * loop is caught: pings come from the loop itself, not from a thread), and
 * STOPPING=1 when shutdown starts.  Without $NOTIFY_SOCKET (not under
 * systemd) every call does nothing.  A failed send is logged once and never
 * takes the daemon down: systemd's own timeouts handle a daemon that stops
 * notifying.
 */
import { systemClock, type Clock, type Timer } from '../clock';
import { log } from '../log';
import { native } from '../native';

export interface NotifyEnvironment {
  NOTIFY_SOCKET?: string;
  WATCHDOG_USEC?: string;
  WATCHDOG_PID?: string;
}

export class SystemdNotifier {
  private readonly socket: string | undefined;
  /** Half of WatchdogSec, or undefined when systemd asked for no watchdog (or for another process). */
  readonly watchdogIntervalMs: number | undefined;
  private timer: Timer | undefined;
  private failed = false;

  constructor(
    env: NotifyEnvironment = process.env,
    private readonly send: (socket: string, message: string) => void = native.sdNotify,
    pid = process.pid,
    private readonly clock: Clock = systemClock,
  ) {
    this.socket = env.NOTIFY_SOCKET || undefined;
    const usec = Number(env.WATCHDOG_USEC);
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === pid;
    this.watchdogIntervalMs = this.socket && forUs && Number.isFinite(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2000)) : undefined;
  }

  notify(message: string): void {
    if (!this.socket) return;
    try {
      this.send(this.socket, message);
    } catch (error) {
      if (!this.failed) log.warn('sd_notify failed', { socket: this.socket, error: (error as Error).message });
      this.failed = true;
    }
  }

  /**
   * READY=1 with a first status, then the watchdog: each ping waits for
   * `alive` (a cheap round trip through the file system's own layers), so a
   * daemon whose event loop runs but whose file system is stuck stops pinging
   * too, and systemd restarts it.
   */
  ready(status: string, alive: () => Promise<unknown> = async () => undefined): void {
    this.notify(`READY=1\nSTATUS=${oneLine(status)}\nMAINPID=${process.pid}`);
    if (this.watchdogIntervalMs === undefined || this.timer) return;
    let checking = false;
    this.timer = this.clock.every(this.watchdogIntervalMs, () => {
      if (checking) return; // the last check has not come back: no ping
      checking = true;
      alive().then(
        () => {
          checking = false;
          if (this.timer) this.notify('WATCHDOG=1');
        },
        (error: unknown) => {
          checking = false;
          log.error('watchdog check failed; no ping', { error: (error as Error)?.message });
        },
      );
    });
  }

  status(status: string): void {
    this.notify(`STATUS=${oneLine(status)}`);
  }

  stopping(status: string): void {
    this.timer?.stop();
    this.timer = undefined;
    this.notify(`STOPPING=1\nSTATUS=${oneLine(status)}`);
  }
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').slice(0, 400);
}
