/**
 * The --help texts of the commands that talk to the daemon (commands.ts).
 * bin/completion.bash and test/cli.test.ts check their flags against these.
 */
const socketHelp = `
Talks to the daemon's admin socket: --socket PATH, else $TIERFS_SOCKET,
else /run/tierfs/admin.sock.`;

export const commandHelp = {
  status: `Usage: tierfs status [--json] [--socket PATH]

The running daemon: flash tier capacity, use and watermarks; bytes by
residency (flash only, both, object only); packs (count, stored, live,
garbage); the destage queue and rate; recall rate, latency, GETs and GETs
per GiB recalled (since the start and over the last minute: what the
bucket bills), bytes fetched ahead of readers; errors; the object target
and its health; metadata replication (how far the bucket is behind, the
latest snapshot, how far back restore points go, PUTs in the last hour,
bytes of dead packs kept for restore points); files lost with a flash tier;
policies and pinned files.

  --json   the whole report (stable fields: flash.capacityBytes,
           flash.usedBytes, residency.flashOnlyBytes, residency.bothBytes,
           residency.objectOnlyBytes, packs.count, packs.storedBytes,
           packs.liveBytes, packs.garbageBytes)

Examples:
  tierfs status
  tierfs status --json | jq .residency
${socketHelp}
`,
  stat: `Usage: tierfs stat PATH... [--json] [--socket PATH]

Residency of files in the mount, like lfs hsm_state: size, bytes whose
current data is on flash (flashBytes), bytes with a copy in a pack
(objectBytes), the split into flash only / both / object only, heat, the
policy that applies and whether the file is pinned.  A directory is listed,
one line per entry with a residency column (flash, both, object, mixed,
empty; - for a directory).

  --json   one object per PATH (an array for several; stable fields: path,
           size, flashBytes, objectBytes, policy; a directory has entries)

Examples:
  tierfs stat /mnt/tierfs/projects/report.pdf
  tierfs stat /mnt/tierfs/projects
${socketHelp}
`,
  heat: `Usage: tierfs heat [PATH] [--json] [--socket PATH]

A histogram of bytes by time since their last access (under 1 hour, 1 hour
to 1 day, 1-7 days, 7-30 days, 30-90 days, 90 days to 1 year, over a year),
with how much of each is on flash: for the whole file system, or the files
at and under PATH.

Examples:
  tierfs heat
  tierfs heat /mnt/tierfs/projects --json
${socketHelp}
`,
  destage: `Usage: tierfs destage PATH... [--wait] [--socket PATH]

Copy every extent only on flash of the files at PATH (directories: all
files under them) into packs now, whatever their cooling period.  Files a
pin or never policy keeps on flash are skipped (refused if nothing else is
left).  The flash copy stays until eviction or release.

  --wait   wait until done: a progress bar with bytes, rate and ETA on a
           terminal, a progress line every 5 s otherwise.  Ctrl-C stops the
           destage after the pack in flight; what was destaged stays.

Examples:
  tierfs destage /mnt/tierfs/archive/2025 --wait
${socketHelp}
`,
  recall: `Usage: tierfs recall PATH... [--wait] [--socket PATH]

Bring every extent only in packs of the files at PATH (directories: all
files under them) back to flash; colder data is evicted to make room.

  --wait   wait until done (progress as for destage; Ctrl-C stops after
           the extents in flight, what was recalled stays)

Examples:
  tierfs recall /mnt/tierfs/projects/q3 --wait
${socketHelp}
`,
  release: `Usage: tierfs release PATH... [--wait] [--json] [--socket PATH]

Drop the flash copy of every extent of the files at PATH (directories: all
files under them) that already has a copy in a pack (BOTH -> OBJECT): the
space is free as each batch of files commits.  Extents only on flash stay;
destage them first.  Files a pin keeps on flash are skipped (a single
pinned file is refused).  Runs in the daemon, a batch of 256 files per
commit.

  --wait   wait until done (progress as for destage; Ctrl-C stops after
           the batch in flight, what was released stays)
  --json   print the result as JSON (with --wait)

Examples:
  tierfs release /mnt/tierfs/archive/2025 --wait
${socketHelp}
`,
  pin: `Usage: tierfs pin PATH... [--recursive] [--wait] [--socket PATH]

Pin files to flash: a pin overrides every policy (nothing of the file is
destaged or evicted) and lasts until unpin or the file's deletion.  What is
only in packs is recalled.

  --recursive  pin every file under a directory PATH (else refused)
  --wait       wait for the recall (progress as for recall)

Examples:
  tierfs pin /mnt/tierfs/db/catalog.sqlite --wait
  tierfs pin --recursive /mnt/tierfs/projects/live
${socketHelp}
`,
  unpin: `Usage: tierfs unpin PATH... [--recursive] [--socket PATH]

Remove pins: the files follow their policy again.

Examples:
  tierfs unpin --recursive /mnt/tierfs/projects/live
${socketHelp}
`,
  policy: `Usage: tierfs policy add NAME --path GLOB --mode auto|pin|all|never
                         [--cool-after DURATION] [--min-size SIZE] [--compress]
                         [--target NAME] [--durable flash|object]
       tierfs policy edit NAME [--path GLOB] [--mode MODE] [--cool-after DURATION]
                         [--min-size SIZE] [--compress | --no-compress] [--target NAME]
                         [--durable flash|object]
       tierfs policy list [--json] | show NAME [--json] | rm NAME
       tierfs policy explain PATH [--json]
       tierfs policy simulate --flash-size SIZE [--policy MODE:GLOB[:COOL_AFTER]]...
                         [--replace] [--json]

Policies decide, by path, when a file's extents leave flash:
  auto   destaged once untouched for the cooling period (--cool-after,
         default that of serve --cool-after, 1h), evicted under the watermarks
  pin    never leaves flash
  all    destaged as soon as written; stays on flash while hot
  never  no object copy at all
GLOB is matched from the root of the file system: * and ? within a path
segment, ** across segments; a glob without / matches file names in any
directory (*.iso).  The most specific match (most literal characters) wins;
without a match the default policy applies (auto).  --min-size: smaller
files stay on flash.  --compress: deflate the file's extents in packs.
--target: the target its packs go to (default: default; see tierfs target).
--durable: what fsync of the file waits for: flash (default: the flash
tier, as a local disk) or object (its bytes in a pack in the bucket and
the change in the replicated metadata log: survives losing the appliance;
concurrent fsyncs share one upload; needs metadata replication on).
DURATION: 90s, 15m, 2h, 7d, 2w.  SIZE: 4G, 512MiB, 1048576.

explain   which policies match PATH, which one applies and why (a pin by
          tierfs pin overrides them all)
simulate  what-if from the recorded heat: with a flash tier of SIZE (and
          the given policies added, or instead of the current ones with
          --replace), the bytes that would be on flash and in packs, the
          share of reads flash would serve, and the object storage cost a
          month (prices from the serve config "prices"; default S3
          Standard list prices).  Nothing changes.

Examples:
  tierfs policy add projects --path '/projects/**' --mode auto --cool-after 7d
  tierfs policy add databases --path '*.db' --mode pin
  tierfs policy edit projects --cool-after 30d
  tierfs policy explain /mnt/tierfs/projects/a.db
  tierfs policy simulate --flash-size 2T --policy 'auto:/projects/**:30d'
${socketHelp}
`,
  fsck: `Usage: tierfs fsck [--repair] [--deep [--sample-packs N]] [--json] [--socket PATH]

Check the running file system's metadata against the flash tier and the
object tier: every flash copy is read and verified; every extent must
belong to a file and every pack it names must exist in the target with its
recorded size; pack objects without a record are orphans; objects under
the prefix that are not packs are listed (foreign) and left alone.

  --deep     also fetch and verify every pack copy (reads the whole bucket)
  --sample-packs N  with --deep: only the extents of N live packs picked at
             random (the weekly scrub, tierfs-scrub.timer)
  --repair   fix what loses nothing: forget a lost or bad pack copy of data
             good on flash (destaged again), drop a bad flash copy of data
             with a good pack copy, drop extents of no file, delete orphan
             pack objects.  Data with no good copy left is reported only.
  --json     the report as JSON

Exit status: 0 no problems, 1 problems found and all repaired, 4 problems
left (as e2fsck).

Examples:
  tierfs fsck
  tierfs fsck --deep --repair
${socketHelp}
`,
  watermark: `Usage: tierfs watermark set --high PERCENT --low PERCENT [--socket PATH]
       tierfs watermark show [--json] [--socket PATH]

Above the high watermark (percent of the flash tier in use) the daemon
evicts the coldest data already in packs, then destages urgently, until use
is below the low one.  set applies at once and is kept in the metadata for
later starts (a watermark given to serve overrides it).

Examples:
  tierfs watermark set --high 85 --low 70
${socketHelp}
`,
  target: `Usage: tierfs target list [--json] [--socket PATH]
       tierfs target test [NAME] [--json] [--socket PATH]
       tierfs target add NAME URL [--json] [--socket PATH]
       tierfs target rm NAME [--socket PATH]

The object targets of the file system: their URL, health, packs and bytes.
"default" is the one given to format; add more and send files there with a
policy's --target NAME (packs already written stay where they are).

  test   write, read back and delete a probe object beside the packs and
         time each step (exit status 1 when it fails)
  add    check the URL, write/read/delete a probe object, then record the
         target (refused if that fails, or if another target has that URL)
  rm     remove a target no policy names and no pack is in

URL: file:///dir, s3://bucket/prefix[?endpoint=URL&region=R],
azure://container/prefix[?endpoint=URL]; credentials as for format.

Examples:
  tierfs target add archive 's3://cold-archive/tierfs?region=eu-west-1'
  tierfs policy add old --path '/archive/**' --mode auto --cool-after 30d --target archive
  tierfs target test archive
  tierfs target list
${socketHelp}
`,
  followers: `Usage: tierfs followers [--json] [--socket PATH]

The followers of this file system (serve --follow on other appliances), as
each last published its position in the bucket (at most every 10 s while it
applies the writer's log, every minute while idle, and at a clean stop): its
id and host, the change it has applied, how many changes it is behind this
appliance's last one in the bucket, when it published, and its state:
following; stale (nothing published for 5 minutes: stopped, or cut off); or
must resynchronise (behind the oldest restore point kept: the log it needs
is gone).  The writer keeps the log and packs a follower needs for
metadataRetention; one further behind must resynchronise.

Examples:
  tierfs followers
  tierfs followers --json | jq '.followers[] | select(.behindChanges > 1000)'
${socketHelp}
`,
  lost: `Usage: tierfs lost [--json] [--socket PATH]

Files whose newest data was only on a flash tier that was lost (a blank
disk found at start in place of the flash tier, or a restore from the
bucket of data written after its last upload): path, the lost byte ranges
and when the file was last written.  Reading a lost range fails with EIO,
never zeros; writing whole blocks over it, truncating the file or removing
it ends that.  At most 10,000 files are listed (the count in tierfs status
is exact).

Examples:
  tierfs lost
  tierfs lost --json | jq -r '.files[].path'
${socketHelp}
`,
  share: `Usage: tierfs share add NAME PATH [--nfs CIDR[,CIDR...]] [--no-root-squash]
                        [--smb [--users USER[,USER...]]] [--ro] [--allow-world]
       tierfs share edit NAME [--path PATH] [--nfs CIDR[,CIDR...] | --no-nfs]
                        [--root-squash | --no-root-squash] [--smb | --no-smb]
                        [--users USER[,USER...]] [--ro | --rw]
                        [--allow-world | --no-allow-world]
       tierfs share rm NAME
       tierfs share list [--json]
       tierfs share show NAME [--json]
       tierfs share user add USER [--password-stdin]
       tierfs share user rm USER
       tierfs share user list [--json]
       (each also takes --socket PATH)

Network shares of directories of the mounted file system: NFS (v3, v4.1,
v4.2) through the kernel NFS server and SMB 3 through Samba (encryption
required, no guest access).  Shares are kept in the metadata (they survive
restarts and travel with the file system and its bucket) and applied at
once: the daemon owns one exports file (/etc/exports.d/tierfs.exports) and
one Samba include (/etc/samba/tierfs-shares.conf), runs exportfs -r and
reloads smbd, takes the shares away before it unmounts and puts them back
once the mount serves.  Everything is checked before anything changes.

  PATH            a directory on the mount (absolute, or relative to the
                  current directory; no "." or ".." segments)
  --nfs CIDRS     export over NFS to these clients (10.0.0.0/8,
                  192.168.1.7, 2001:db8::/32); --no-nfs stops exporting
  --no-root-squash  NFS clients' root stays root (default: squashed)
  --smb           share over SMB (--no-smb stops); --users: only these
                  Samba users (default: every Samba user)
  --ro / --rw     read-only (both protocols) / read-write (the default)
  --allow-world   allow a /0 client range with write access
  list, show      each share, whether the servers serve it, SMB
                  connections, and the NFS server's clients
  user add        add a Samba user (or set its password); the password is
                  asked twice on a terminal, else read from one line of
                  stdin (--password-stdin says so explicitly).  A Unix
                  account is made for it when there is none (no login
                  shell); user rm removes that account too, and refuses a
                  user a share names

The directory's Unix permissions apply to SMB users as to local ones.

Examples:
  tierfs share add projects /mnt/tierfs/projects --nfs 10.0.0.0/8 --smb --users alice
  tierfs share edit projects --ro
  echo 'a long passphrase' | tierfs share user add alice --password-stdin
  tierfs share list
${socketHelp}
`,
};
