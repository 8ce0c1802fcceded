/**
 * One-line structured log to stderr: `level msg key=value ...`.  Under
 * systemd the journal adds the time; on a terminal the line is short enough
 * to read.  Tests silence it with TIERFS_LOG=silent.
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
type Level = keyof typeof levels;

function threshold(): number {
  const name = (process.env.TIERFS_LOG ?? 'info') as Level;
  return levels[name] ?? levels.info;
}

function emit(level: Exclude<Level, 'silent'>, message: string, fields?: Record<string, unknown>): void {
  if (levels[level] < threshold()) return;
  let line = `${level} ${message}`;
  for (const [key, value] of Object.entries(fields ?? {})) {
    const text = value instanceof Error ? value.message : String(value);
    line += ` ${key}=${/[\s"]/.test(text) ? JSON.stringify(text) : text}`;
  }
  process.stderr.write(line + '\n');
}

export const log = {
  debug: (message: string, fields?: Record<string, unknown>) => emit('debug', message, fields),
  info: (message: string, fields?: Record<string, unknown>) => emit('info', message, fields),
  warn: (message: string, fields?: Record<string, unknown>) => emit('warn', message, fields),
  error: (message: string, fields?: Record<string, unknown>) => emit('error', message, fields),
};
