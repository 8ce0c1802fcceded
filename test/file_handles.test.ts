// File handles, as the kernel NFS server hands them to its clients, on the
// FUSE mount: a handle taken before `tierfsd` restarts opens the same file
// after it (the kernel asks the new daemon for "." of a node id it has never
// seen: export support and generation numbers), a handle of a removed file
// answers ESTALE, and a file made again under the same name has a new handle.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { formatWithTarget, serve } from './helpers/daemon';
import { scratchDir } from './helpers/fs';

const script = path.join(__dirname, 'scripts', 'file_handle.py');

function handleOf(file: string): string {
  const r = spawnSync('python3', [script, 'encode', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

function openByHandle(mount: string, handle: string): string {
  const r = spawnSync('python3', [script, 'open', mount, handle], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

const sha256 = (data: Buffer) => `ok ${crypto.createHash('sha256').update(data).digest('hex')}`;

if (process.getuid?.() !== 0) {
  t.comment('file handles: open_by_handle_at needs CAP_DAC_READ_SEARCH (root); CI runs as root');
} else {
  t.test('file handles survive a restart of the daemon; removed files answer ESTALE', async (t) => {
    const scratch = await formatWithTarget(t, `file://${path.join(scratchDir(t), 'objects')}`);
    const mount = path.join(scratch.dir, 'mnt');
    let served = await serve(t, scratch, mount);
    const data = crypto.randomBytes(3 * 2 ** 20 + 17);
    fs.mkdirSync(path.join(mount, 'dir'));
    fs.writeFileSync(path.join(mount, 'dir', 'file'), data);
    fs.writeFileSync(path.join(mount, 'doomed'), 'soon gone');
    const handles = { file: handleOf(path.join(mount, 'dir', 'file')), dir: handleOf(path.join(mount, 'dir')), doomed: handleOf(path.join(mount, 'doomed')) };
    t.equal(openByHandle(mount, handles.file), sha256(data), 'opens by handle while the kernel knows the node');

    t.equal(await served.stop(), 0);
    served = await serve(t, scratch, mount);
    t.equal(openByHandle(mount, handles.file), sha256(data), 'a handle from before the restart opens the same file');
    t.equal(openByHandle(mount, handles.dir), 'ok directory', 'and a directory');
    t.equal(handleOf(path.join(mount, 'dir', 'file')), handles.file, 'the file has the same handle after the restart');

    fs.unlinkSync(path.join(mount, 'doomed'));
    t.equal(openByHandle(mount, handles.doomed), 'errno ESTALE', 'a removed file: ESTALE');
    fs.writeFileSync(path.join(mount, 'doomed'), 'made again');
    const again = handleOf(path.join(mount, 'doomed'));
    t.not(again, handles.doomed, 'made again under the same name: a new handle');
    t.equal(openByHandle(mount, handles.doomed), 'errno ESTALE', 'the old handle still does not reach it');
    t.equal(openByHandle(mount, again), sha256(Buffer.from('made again')));
    t.equal(await served.stop(), 0);
  });
}
