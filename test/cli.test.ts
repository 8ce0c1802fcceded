// The tierfs command: help, format and serve, and one clear line for every mistake.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { main } from '../src/cli/main';
import { parseSize } from '../src/cli/args';
import { formatScratch, scratchDir } from './helpers/fs';
import { tierfsBin } from './helpers/daemon';

/** Run the CLI in-process, capturing stdout and stderr. */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const write = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string) => ((out += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((err += chunk), true)) as typeof process.stderr.write;
  try {
    const code = await main(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = write;
    process.stderr.write = writeErr;
  }
}

function oneLine(t: tap.Test, err: string, pattern: RegExp): void {
  const lines = err.split('\n').filter((line) => line.startsWith('tierfs:'));
  t.equal(lines.length, 1, `one error line: ${err.trim()}`);
  t.match(lines[0] ?? '', pattern);
  t.notMatch(err, /\n\s+at /, 'no stack trace');
}

t.test('help', async (t) => {
  for (const argv of [['--help'], ['format', '--help'], ['serve', '--help']]) {
    const r = await cli(...argv);
    t.equal(r.code, 0, `${argv.join(' ')} exits 0`);
    t.match(r.out, /Usage: tierfs/);
  }
  t.match((await cli('format', '--help')).out, /Examples:/, 'help has examples');
  t.equal((await cli()).code, 2, 'no command: usage and exit 2');
  const bin = spawnSync(process.execPath, [tierfsBin, '--help'], { encoding: 'utf8' });
  t.equal(bin.status, 0, 'the installed entry point runs');
  t.match(bin.stdout, /format/);
});

t.test('format: works, refuses, and explains', async (t) => {
  const dir = scratchDir(t);
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  const ok = await cli('format', '--flash', flash, '--size', '64M', '--meta', meta);
  t.equal(ok.code, 0, ok.err);
  t.match(ok.out, /formatted .*0\.06 GiB, file system [0-9a-f-]{36}/);
  t.equal(fs.statSync(flash).size, 64 * 2 ** 20);
  t.ok(fs.statSync(flash).blocks * 512 < 2 ** 20, 'a new flash file is sparse');

  const again = await cli('format', '--flash', flash, '--meta', meta);
  t.equal(again.code, 1);
  oneLine(t, again.err, /already holds a tierfs file system; use --force/);
  t.equal((await cli('format', '--flash', flash, '--meta', meta, '--force')).code, 0, '--force formats again');

  const cases: [string[], RegExp, number][] = [
    [['format', '--meta', meta], /--flash is required/, 2],
    [['format', '--flash', flash], /--meta is required/, 2],
    [['format', '--flash', path.join(dir, 'n'), '--meta', path.join(dir, 'm'), '--size', 'lots'], /"lots" is not a size/, 2],
    [['format', '--flash', path.join(dir, 'n'), '--meta', path.join(dir, 'm'), '--size', '1M'], /at least 16 MiB/, 2],
    [['format', '--flash', path.join(dir, 'n'), '--meta', path.join(dir, 'm'), '--size', '16777217'], /multiple of 4096/, 2],
    [['format', '--flash', flash, '--meta', meta, '--size', '128M', '--force'], /exists with another size/, 2],
    [['format', '--flash', path.join(dir, 'no', 'such', 'dir', 'f'), '--meta', meta], /does not exist/, 1],
    [['format', '--flash', flash, '--meta', meta, '--bogus'], /Unknown option '--bogus'/, 2],
    [['format', '--flash', flash, '--meta', meta, 'extra'], /unexpected argument extra/, 2],
    [['frobnicate'], /unknown command "frobnicate"/, 2],
  ];
  for (const [argv, pattern, code] of cases) {
    const r = await cli(...argv);
    t.equal(r.code, code, `${argv.join(' ')}: exit ${code}`);
    oneLine(t, r.err, pattern);
  }
  t.notOk(fs.existsSync(path.join(dir, 'n')), 'a refused format leaves no file behind');
  t.notOk(fs.existsSync(path.join(dir, 'm')), 'nor metadata');
});

t.test('serve: bad configurations are refused before anything is mounted', async (t) => {
  const dir = scratchDir(t);
  const config = path.join(dir, 'tierfs.json');
  const cases: [string | undefined, string[], RegExp][] = [
    [undefined, ['serve', '--flash', 'x', '--meta', 'y'], /--mount is required/],
    ['{ not json', ['serve', '--config', config], /--config .*JSON/],
    ['[]', ['serve', '--config', config], /expected a JSON object/],
    ['{"flash":"a","meta":"b","mount":"c","colour":"red"}', ['serve', '--config', config], /unknown key "colour"/],
    ['{"flash":"a","meta":"","mount":"c"}', ['serve', '--config', config], /"meta" must be a non-empty string/],
    ['{"flash":"a","meta":"b","mount":"c","allowOther":"yes"}', ['serve', '--config', config], /"allowOther" must be true or false/],
    ['{"flash":"a","meta":"b","mount":"c","writebackCache":1}', ['serve', '--config', config], /"writebackCache" must be true or false/],
    ['{"flash":"a","meta":"b","mount":"c","uploadConcurrency":17}', ['serve', '--config', config], /"uploadConcurrency" must be a whole number from 1 to 16/],
    ['{"flash":"a","meta":"b","mount":"c","uploadConcurrency":1.5}', ['serve', '--config', config], /"uploadConcurrency" must be a whole number/],
    ['{"flash":"a","meta":"b","mount":"c"}', ['serve', '--config', config, '--flash', 'a'], /either --config or/],
  ];
  for (const [text, argv, pattern] of cases) {
    if (text !== undefined) fs.writeFileSync(config, text);
    const r = await cli(...argv);
    t.equal(r.code, 2, `${text ?? argv.join(' ')}: usage error`);
    oneLine(t, r.err, pattern);
  }
  fs.writeFileSync(path.join(dir, 'file'), '');
  const notDir = await cli('serve', '--flash', 'a', '--meta', 'b', '--mount', path.join(dir, 'file'));
  oneLine(t, notDir.err, /is not a directory/);
  const noMeta = await cli('serve', '--flash', path.join(dir, 'absent'), '--meta', dir, '--mount', path.join(dir, 'mnt'));
  t.equal(noMeta.code, 1);
  oneLine(t, noMeta.err, /no tierfs metadata in .* \(run tierfs format first\)/);
  const scratch = await formatScratch(t, 16 * 2 ** 20);
  const missing = await cli('serve', '--flash', path.join(dir, 'absent'), '--meta', scratch.meta, '--mount', path.join(dir, 'mnt'));
  t.equal(missing.code, 1);
  oneLine(t, missing.err, /flash tier .*absent does not exist/);
});

t.test('sizes', async (t) => {
  t.equal(parseSize('4G', 's'), 4 * 2 ** 30);
  t.equal(parseSize('512MiB', 's'), 512 * 2 ** 20);
  t.equal(parseSize('1.5k', 's'), 1536);
  t.equal(parseSize('1048576', 's'), 2 ** 20);
  t.equal(parseSize(' 2 tb ', 's'), 2 * 2 ** 40);
  t.throws(() => parseSize('-1G', 's'), { code: 'USAGE' });
  t.throws(() => parseSize('4X', 's'), { code: 'USAGE' });
  t.throws(() => parseSize('9999999999T', 's'), { code: 'USAGE' });
});

t.test('bash completion: every command, subcommand and flag of the help, and nothing the commands refuse', async (t) => {
  const script = path.join(__dirname, '..', 'bin', 'completion.bash');
  /** What bash completes for the words typed so far (the last one may be partial). */
  const complete = (...words: string[]): string[] => {
    const quoted = words.map((w) => `'${w}'`).join(' ');
    const r = spawnSync('bash', ['-c', `source '${script}'; COMP_WORDS=(tierfs ${quoted}); COMP_CWORD=${words.length}; _tierfs; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter((w) => w !== '').sort();
  };
  /** The flags of a help text: those of its usage lines and of its option list (not of its prose or examples). */
  const flagsOf = (help: string) => {
    const usage = help.split('\n\n')[0];
    const options = help.split('\n').flatMap((line) => /^\s+(--[a-z][a-z-]+)/.exec(line)?.[1] ?? []);
    const socket = /admin socket: --socket PATH/.test(help) ? ['--socket'] : [];
    return [...new Set([...(usage.match(/--[a-z][a-z-]+/g) ?? []), ...options, ...socket])].filter((f) => f !== '--help').sort();
  };
  const mainHelp = (await cli('--help')).out;
  const helpCommands = [...mainHelp.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);
  const commands = complete('').filter((w) => w !== '--help');
  t.same(commands, [...helpCommands, 'unpin'].sort(), 'the commands of tierfs --help (and unpin, which pin --help names)');
  t.same(complete('pol'), ['policy']);
  for (const command of commands) {
    const help = (await cli(command, '--help')).out;
    t.match(help, /Usage: tierfs/, `${command} --help`);
    const declared = spawnSync('bash', ['-c', `source '${script}'; _tierfs_subcommands '${command}'`], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
    const subcommands = declared.length > 0 ? complete(command, '').filter((w) => w !== '--help') : [];
    t.same(subcommands, [...declared].sort(), `${command}: its subcommands complete`);
    const completed = new Set<string>();
    for (const sub of subcommands.length > 0 ? subcommands : [undefined]) {
      const words = sub === undefined ? [command] : [command, sub];
      const flags = complete(...words, '--').filter((w) => w !== '--help');
      flags.forEach((f) => completed.add(f));
      if (['format', 'serve', 'firstboot', 'restore', 'promote'].includes(command)) continue; // these act on the machine: checked against their help only
      for (const flag of flags) {
        // Against a socket nobody serves: the command parses and checks its options, then fails to connect.
        let r = await cli(...words, flag, '--socket', '/nonexistent/admin.sock');
        if (/argument missing/.test(r.err)) r = await cli(...words, flag, '1', '--socket', '/nonexistent/admin.sock');
        t.notMatch(r.err, /Unknown option|does not apply/, `tierfs ${words.join(' ')} ${flag} is accepted`);
      }
    }
    t.same([...completed].sort(), flagsOf(help), `${command}: the flags of its help, no more, no fewer`);
  }
  t.same(complete('policy', 'add', '--mode', ''), ['all', 'auto', 'never', 'pin'], 'values of --mode');
});
