// The systemd notify protocol: the notifier's logic with an injected sender,
// and the real datagrams of `tierfs serve` received on a socket the test
// creates (a path and an abstract name), as systemd would receive them.
import { SimulatedClock } from '../src/clock';
import t from 'tap';
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { SystemdNotifier } from '../src/daemon/notify';
import { native } from '../src/native';
import { formatScratch, scratchDir } from './helpers/fs';
import { serve } from './helpers/daemon';

function receiver(t: Test, name: string) {
  const child = spawn('python3', [path.join(__dirname, 'scripts', 'notify_receiver.py'), name], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  const messages: string[] = [];
  let listening = false;
  let buffered = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffered += chunk;
    for (let i; (i = buffered.indexOf('\n')) >= 0; buffered = buffered.slice(i + 1)) {
      const line = JSON.parse(buffered.slice(0, i)) as { listening?: string; message?: string };
      if (line.listening) listening = true;
      if (line.message !== undefined) messages.push(line.message);
    }
  });
  return {
    messages,
    async ready() {
      const deadline = Date.now() + 20_000;
      while (!listening && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      if (!listening) throw new Error('the notify receiver did not listen within 20 s');
    },
    async waitFor(pattern: RegExp, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!messages.some((m) => pattern.test(m))) {
        if (Date.now() > deadline) throw new Error(`no ${pattern} in ${JSON.stringify(messages)}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return messages.find((m) => pattern.test(m))!;
    },
  };
}

t.test('the notifier: silent off systemd, watchdog at half of WatchdogSec and only for its own pid', async (t) => {
  const sent: string[] = [];
  const send = (_socket: string, message: string) => void sent.push(message);
  const off = new SystemdNotifier({}, send);
  off.ready('x');
  off.stopping('y');
  t.same(sent, [], 'no NOTIFY_SOCKET: nothing sent');
  t.equal(new SystemdNotifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000' }, send).watchdogIntervalMs, 15_000);
  t.equal(new SystemdNotifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' }, send, 2).watchdogIntervalMs, undefined, 'meant for another process');
  t.equal(new SystemdNotifier({ NOTIFY_SOCKET: '/run/x' }, send).watchdogIntervalMs, undefined);

  // A file system that stops answering stops the pings (on simulated time: exact counts).
  let stuck = false;
  let checks = 0;
  const clock = new SimulatedClock();
  const pings = () => sent.filter((m) => m === 'WATCHDOG=1').length;
  const n = new SystemdNotifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '40000' }, send, process.pid, clock);
  n.ready('serving', () => {
    checks += 1;
    return stuck ? new Promise(() => undefined) : Promise.resolve();
  });
  t.match(sent[0], /^READY=1\nSTATUS=serving\nMAINPID=\d+$/);
  await clock.advance(19);
  t.equal(pings(), 0, 'no ping before the first interval');
  await clock.advance(81);
  t.equal(pings(), 5, 'a ping every 20 ms, each after a check came back');
  stuck = true;
  await clock.advance(200);
  t.equal(pings(), 5, 'no ping while the check hangs');
  t.equal(checks, 6, 'and no second check on top of the hanging one');
  n.stopping('bye');
  t.equal(clock.pendingCount, 0, 'stopping ends the watchdog timer');
  t.equal(sent[sent.length - 1], 'STOPPING=1\nSTATUS=bye');

  let failures = 0;
  const failing = new SystemdNotifier({ NOTIFY_SOCKET: '/nonexistent/socket' }, (socket, message) => {
    failures += 1;
    native.sdNotify(socket, message);
  });
  failing.status('a');
  failing.status('b');
  t.equal(failures, 2, 'a failed send never throws into the daemon');
  t.throws(() => native.sdNotify('relative', 'X=1'), /absolute path or an @abstract name/);
  t.throws(() => native.sdNotify('/nonexistent/socket', 'X=1'), { code: 'ENOENT' });
});

for (const kind of ['path', 'abstract'] as const) {
  t.test(`tierfs serve under a notify socket (${kind}): READY once mounted, watchdog pings, STOPPING on SIGTERM`, async (t) => {
    const scratch = await formatScratch(t);
    const name = kind === 'path' ? path.join(scratchDir(t), 'notify.sock') : `@tierfs-test-${process.pid}-${Date.now()}`;
    const systemd = receiver(t, name);
    await systemd.ready();
    const served = await serve(t, scratch, undefined, [], { NOTIFY_SOCKET: name, WATCHDOG_USEC: '500000' });
    const ready = await systemd.waitFor(/^READY=1/);
    t.match(ready, new RegExp(`STATUS=serving ${served.mount.replace(/[/.]/g, '\\$&')}, flash [\\d.]+% used`));
    t.match(served.stderr(), /info serving/, 'READY came once the mount served');
    await systemd.waitFor(/^WATCHDOG=1$/);
    // Half of WatchdogSec: three pings arrive well within 10 s (polled under a deadline, not timed).
    const deadline = Date.now() + 10_000;
    while (systemd.messages.filter((m) => m === 'WATCHDOG=1').length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    t.ok(systemd.messages.filter((m) => m === 'WATCHDOG=1').length >= 3, 'the pings go on');
    t.equal(await served.stop(), 0);
    t.match(await systemd.waitFor(/^STOPPING=1/), /STATUS=stopping \(SIGTERM\): committing and unmounting/);
  });
}
