/**
 * tierfs share: network shares (NFS, SMB) and Samba users, through the
 * daemon's admin socket.  Passwords are asked on the terminal without echo,
 * or read from one line of stdin.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TierfsError } from '../errors';
import type { ShareBody, ShareEditBody, ShareReport } from '../daemon/shares';
import { noArguments } from './args';
import { call } from './client';
import { parse, printJson } from './commands';

function usage(message: string): never {
  throw new TierfsError('USAGE', message);
}

/** An absolute path for the daemon: resolved through symlinks where it exists; "." and ".." refused as given. */
function sharePath(argument: string): string {
  if (argument.split('/').some((part) => part === '..' || part === '.')) usage(`share: path ${JSON.stringify(argument)} must not contain "." or ".." segments`);
  const absolute = path.resolve(argument);
  try {
    return fs.realpathSync(absolute);
  } catch {
    return absolute; // the daemon says what is wrong with it
  }
}

function list(text: string | undefined): string[] | undefined {
  return text === undefined ? undefined : text.split(',').map((item) => item.trim());
}

function describe(s: ShareReport): string {
  const ways = [
    s.nfs ? `NFS to ${s.nfs.clients.join(', ')}${s.nfs.rootSquash ? '' : ' (no root squash)'}` : '',
    s.smb ? `SMB${s.smb.users.length > 0 ? ` for ${s.smb.users.join(', ')}` : ' for every Samba user'}` : '',
  ].filter((w) => w !== '');
  const connections = s.smbConnections.length > 0 ? `; SMB connections: ${s.smbConnections.join(', ')}` : '';
  return `${s.name.padEnd(16)} ${s.exportPath}  ${s.readOnly ? 'read-only' : 'read-write'}, ${ways.join('; ')}${s.available ? '' : '  (NOT A DIRECTORY NOW: left out)'}${connections}`;
}

function printWarnings(warnings: string[]): void {
  for (const warning of warnings) process.stderr.write(`tierfs: warning: ${warning}\n`);
}

/** One line from stdin (a pipe), or asked twice without echo on a terminal. */
async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const line = Buffer.concat(chunks).toString('utf8').split('\n')[0]!.replace(/\r$/, '');
    if (line === '') usage('share user add: no password on stdin');
    return line;
  }
  const first = await askHidden('Password: ');
  const second = await askHidden('Again: ');
  if (first !== second) usage('share user add: the passwords differ');
  return first;
}

function askHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const input = process.stdin;
    process.stderr.write(prompt);
    input.setRawMode(true);
    input.resume();
    let typed = '';
    const done = (error?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (data: Buffer) => {
      for (const c of data.toString('utf8')) {
        if (c === '\r' || c === '\n') return done();
        if (c === '\u0003') return done(new TierfsError('USAGE', 'share user add: interrupted'));
        if (c === '\u007f' || c === '\b') typed = typed.slice(0, -1);
        else typed += c;
      }
    };
    input.on('data', onData);
  });
}

async function user(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  const command = parse(sub === undefined || sub.startsWith('-') ? argv : rest, 'share', { json: { type: 'boolean' }, 'password-stdin': { type: 'boolean' } });
  if (!command) return;
  if (sub === undefined || sub.startsWith('-')) usage('share user: give a subcommand (add, rm, list; see tierfs share --help)');
  const { positionals, socket, values } = command;
  const oneName = () => {
    if (positionals.length !== 1) usage(`share user ${sub}: give exactly one USER`);
    return positionals[0]!;
  };
  switch (sub) {
    case 'list': {
      noArguments(positionals, 'share user list');
      const r = await call(socket, 'GET /v1/share-users');
      if (values.json) return printJson(r.users);
      if (r.users.length === 0) return void process.stdout.write('no Samba users (tierfs share user add USER)\n');
      for (const u of r.users) process.stdout.write(`${u.name.padEnd(16)} ${u.shares.length > 0 ? `named by ${u.shares.join(', ')}` : ''}\n`);
      return;
    }
    case 'add': {
      const name = oneName();
      const password = await readPassword(values['password-stdin'] === true);
      const r = await call(socket, 'POST /v1/share-users', { body: { name, password } });
      if (values.json) return printJson(r);
      return void process.stdout.write(`${r.passwordChanged ? `password of ${name} changed` : `Samba user ${name} added`}${r.accountCreated ? ' (with a Unix account without login)' : ''}\n`);
    }
    case 'rm': {
      const name = oneName();
      const r = await call(socket, 'DELETE /v1/share-users/:name', { params: { name } });
      return void process.stdout.write(`Samba user ${name} removed${r.accountRemoved ? ' with its Unix account' : ''}\n`);
    }
    default:
      usage(`share user: unknown subcommand ${sub === undefined ? '(none)' : `"${sub}"`} (add, rm, list)`);
  }
}

export async function share(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === 'user') return user(rest);
  const command = parse(sub === undefined || sub.startsWith('-') ? argv : rest, 'share', {
    json: { type: 'boolean' },
    path: { type: 'string' },
    nfs: { type: 'string' },
    'no-nfs': { type: 'boolean' },
    'root-squash': { type: 'boolean' },
    'no-root-squash': { type: 'boolean' },
    smb: { type: 'boolean' },
    'no-smb': { type: 'boolean' },
    users: { type: 'string' },
    ro: { type: 'boolean' },
    rw: { type: 'boolean' },
    'allow-world': { type: 'boolean' },
    'no-allow-world': { type: 'boolean' },
  });
  if (!command) return;
  if (sub === undefined || sub.startsWith('-')) usage('share: give a subcommand (add, edit, rm, list, show, user; see tierfs share --help)');
  const { positionals, socket, values } = command;
  const only = (allowed: string[]) => {
    for (const key of Object.keys(values)) if (!['socket', 'help', ...allowed].includes(key)) usage(`share ${sub}: --${key} does not apply (see tierfs share --help)`);
  };
  const oneName = () => {
    if (positionals.length !== 1) usage(`share ${sub}: give exactly one NAME`);
    return positionals[0]!;
  };
  const either = (yes: string, no: string): boolean | undefined => {
    if (values[yes] && values[no]) usage(`share ${sub}: --${yes} and --${no} contradict each other`);
    return values[yes] ? true : values[no] ? false : undefined;
  };
  switch (sub) {
    case 'add': {
      only(['nfs', 'no-root-squash', 'smb', 'users', 'ro', 'allow-world', 'json']);
      if (positionals.length !== 2) usage('share add: give NAME and PATH (see tierfs share --help)');
      const body: ShareBody = {
        name: positionals[0]!,
        path: sharePath(positionals[1]!),
        ...(values.ro ? { readOnly: true } : {}),
        ...(values.nfs === undefined ? {} : { nfs: list(values.nfs as string) }),
        ...(values['no-root-squash'] ? { rootSquash: false } : {}),
        ...(values.smb ? { smb: true } : {}),
        ...(values.users === undefined ? {} : { users: list(values.users as string) }),
        ...(values['allow-world'] ? { allowWorld: true } : {}),
      };
      const r = await call(socket, 'POST /v1/shares', { body });
      printWarnings(r.warnings);
      if (values.json) return printJson(r.share);
      return void process.stdout.write(`share ${r.share.name} added: ${describe(r.share)}\n`);
    }
    case 'edit': {
      only(['path', 'nfs', 'no-nfs', 'root-squash', 'no-root-squash', 'smb', 'no-smb', 'users', 'ro', 'rw', 'allow-world', 'no-allow-world', 'json']);
      const name = oneName();
      if (values.nfs !== undefined && values['no-nfs']) usage('share edit: --nfs and --no-nfs contradict each other');
      const readOnly = either('ro', 'rw');
      const rootSquash = either('root-squash', 'no-root-squash');
      const smb = either('smb', 'no-smb');
      const allowWorld = either('allow-world', 'no-allow-world');
      const body: ShareEditBody = {
        ...(values.path === undefined ? {} : { path: sharePath(values.path as string) }),
        ...(readOnly === undefined ? {} : { readOnly }),
        ...(values.nfs !== undefined ? { nfs: list(values.nfs as string) } : values['no-nfs'] ? { nfs: [] } : {}),
        ...(rootSquash === undefined ? {} : { rootSquash }),
        ...(smb === undefined ? {} : { smb }),
        ...(values.users === undefined ? {} : { users: list(values.users as string) }),
        ...(allowWorld === undefined ? {} : { allowWorld }),
      };
      if (Object.keys(body).length === 0) usage('share edit: give something to change (see tierfs share --help)');
      const r = await call(socket, 'PUT /v1/shares/:name', { params: { name }, body });
      printWarnings(r.warnings);
      if (values.json) return printJson(r.share);
      return void process.stdout.write(`share ${name} changed: ${describe(r.share)}\n`);
    }
    case 'rm': {
      only([]);
      const name = oneName();
      const r = await call(socket, 'DELETE /v1/shares/:name', { params: { name } });
      printWarnings(r.warnings);
      return void process.stdout.write(`share ${name} removed\n`);
    }
    case 'list': {
      only(['json']);
      noArguments(positionals, 'share list');
      const r = await call(socket, 'GET /v1/shares');
      if (values.json) return printJson(r);
      const lines = r.shares.length === 0 ? ['no shares (tierfs share add)'] : r.shares.map(describe);
      lines.push(`NFS: ${r.nfs.detail}${r.nfs.clients.length > 0 ? `; clients ${r.nfs.clients.join(', ')}` : ''}`, `SMB: ${r.smb.detail}`);
      return void process.stdout.write(`${lines.join('\n')}\n`);
    }
    case 'show': {
      only(['json']);
      const name = oneName();
      const r = await call(socket, 'GET /v1/shares/:name', { params: { name } });
      if (values.json) return printJson(r.share);
      return void process.stdout.write(`${describe(r.share)}\n`);
    }
    default:
      usage(`share: unknown subcommand "${sub}" (add, edit, rm, list, show, user)`);
  }
}
